//! What the filesystem's permissions let others do to a local store, said at start-up (and by
//! `check-config`): records others can read, sinks others can write, replicas that do not run as one user.

use std::{os::unix::fs::MetadataExt, path::Path};

use crate::config::SinkConfig;

/// The warnings of the local store at `root` made with `sinks`, for a service running as user `uid`.
pub fn warnings(root: &Path, sinks: &SinkConfig, uid: Option<u32>) -> Vec<String> {
    let mut warnings = Vec::new();
    let control = root.join(crate::layout::CONTROL);
    if let Ok(meta) = std::fs::symlink_metadata(&control) {
        if meta.mode() & 0o077 != 0 {
            warnings.push(format!(
                "{} may be read by users other than the service's (mode {:o}): workers could read every query's \
                 records; make it the service's own (chmod 700)",
                control.display(),
                meta.mode() & 0o7777
            ));
        }
        if let Some(uid) = uid.filter(|uid| *uid != meta.uid()) {
            warnings.push(format!(
                "{} belongs to user {}, and this service runs as user {uid}: replicas over one store must run as \
                 one user, or one cannot read what another wrote (records are private to their writer)",
                control.display(),
                meta.uid()
            ));
        }
    }
    if sinks.mode & 0o002 != 0 {
        warnings.push(format!(
            "local.sink_mode {:o} lets every user write every sink: give workers a group (local.sink_group) and \
             others nothing (\"2770\")",
            sinks.mode
        ));
    }
    if let Ok(meta) = std::fs::metadata(root)
        && meta.mode() & 0o002 != 0
    {
        warnings.push(format!(
            "{} may be written by every user (mode {:o}): anyone could plant folders where sinks are made; make it \
             writable by the service only (chmod 711 lets workers and clients reach their sinks)",
            root.display(),
            meta.mode() & 0o7777
        ));
    }
    warnings
}

/// Whether this process may give files to other users and groups (`CAP_CHOWN` in its effective
/// capabilities, as `/proc/self/status` says).
pub fn can_chown() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status.lines().find_map(|line| line.strip_prefix("CapEff:")).map(str::trim);
    effective.and_then(|hex| u64::from_str_radix(hex, 16).ok()).is_some_and(|caps| caps & 1 != 0)
}

/// The effective user id of this process, as `/proc/self/status` says (`None` where it does not).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn what_others_could_do_is_said_and_a_private_store_says_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::create_dir(root.join("_control")).unwrap();
        std::fs::set_permissions(root.join("_control"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let own = std::fs::metadata(root.join("_control")).unwrap().uid();
        assert_eq!(warnings(root, &SinkConfig::default(), Some(own)), Vec::<String>::new());

        std::fs::set_permissions(root.join("_control"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let open = SinkConfig { mode: 0o777, ..SinkConfig::default() };
        let said = warnings(root, &open, Some(own.wrapping_add(1))).join("\n");
        for expected in
            ["(mode 755)", "chmod 700", "must run as one user", "lets every user write every sink", "(mode 777)"]
        {
            assert!(said.contains(expected), "{expected} in {said}");
        }
    }
}
