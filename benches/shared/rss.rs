//! A process's resident memory, as the kernel reports it.

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text.lines().find(|line| line.starts_with("VmRSS:")).ok_or("no VmRSS line")?;
    Ok(line.split_whitespace().nth(1).ok_or("no VmRSS value")?.parse()?)
}
