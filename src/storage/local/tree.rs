//! A sink's whole tree, which its worker made and may still be changing: walked (for Commit) and removed
//! (when the result goes), through descriptors only (`folders.rs`), opening nothing but folders. Both hold a
//! bounded number of descriptors and take bounded memory whatever the tree holds: the walk stops at a count of
//! entries and does not go deeper than [`MAX_DEPTH`] folders (no result file lies deeper); the removal lifts
//! what lies deeper up to the top, under a reserved name, and removes it from there.

use std::io;

use rustix::fs::FileType;

use super::folders::{Folder, Unreachable};
use crate::{
    model::{Pin, RESERVED_PREFIX},
    storage::{EntryKind, SinkEntry},
};

/// The most folders one below another that the walk enters and the removal holds open at once.
pub(super) const MAX_DEPTH: usize = crate::storage::MAX_SINK_DEPTH;

/// The entries under `sink`, at most `limit` of them, without following any link. A folder nested deeper
/// than [`MAX_DEPTH`] is one entry of kind [`EntryKind::TooDeep`]; a folder whose name is not UTF-8 is one
/// entry of kind [`EntryKind::Other`] (its files could not be named in a result).
pub(super) fn walk(sink: &Folder, limit: usize) -> io::Result<Vec<SinkEntry>> {
    let mut entries = Vec::new();
    // The folders being read, from the sink down: each with its path relative to the sink.
    let mut stack = vec![(sink.try_clone()?, sink.entries()?, String::new())];
    loop {
        let depth = stack_depth(stack.len());
        let Some((folder, listing, prefix)) = stack.last_mut() else { break };
        if entries.len() >= limit {
            break;
        }
        let Some(entry) = listing.next() else {
            stack.pop();
            continue;
        };
        let (folder, prefix) = (&*folder, &*prefix);
        let entry = entry?;
        let (name, utf8) = match entry.name.to_str() {
            Some(name) => (name.to_owned(), true),
            None => (entry.name.to_string_lossy().into_owned(), false),
        };
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let stat = match folder.stat(&entry.name) {
            Ok(stat) => stat,
            // Removed since the folder was read: it is not there.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        let size_bytes = u64::try_from(stat.st_size).unwrap_or(0);
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory if !utf8 => EntryKind::Other,
            FileType::Directory if depth >= MAX_DEPTH => EntryKind::TooDeep,
            FileType::Directory => {
                let child = match folder.folder(&entry.name) {
                    Ok(child) => child,
                    Err(Unreachable::Missing) => continue,
                    // Replaced by something else since its lstat: not a folder of the sink's own.
                    Err(Unreachable::Other(_)) => {
                        entries.push(SinkEntry { path, size_bytes: 0, kind: EntryKind::Other, pin: None });
                        continue;
                    }
                    Err(Unreachable::Failed(error)) => return Err(error),
                };
                let listing = child.entries()?;
                stack.push((child, listing, path));
                continue;
            }
            FileType::Symlink => EntryKind::Symlink,
            // A second name of a file elsewhere (outside the root, say) is not the result's own file.
            FileType::RegularFile if utf8 && stat.st_nlink == 1 => EntryKind::File,
            _ => EntryKind::Other,
        };
        let pin = (kind == EntryKind::File).then(|| pin(&stat));
        entries.push(SinkEntry { path, size_bytes, kind, pin });
    }
    Ok(entries)
}

/// What names this version of the file `stat` describes: its device and inode, and its change time.
#[allow(clippy::useless_conversion)] // The fields' widths differ between platforms.
pub(super) fn pin(stat: &rustix::fs::Stat) -> Pin {
    Pin::File {
        device: u64::from(stat.st_dev),
        inode: u64::from(stat.st_ino),
        ctime_seconds: i64::from(stat.st_ctime),
        // Below a second, as the kernel gives it.
        ctime_nanos: u32::try_from(stat.st_ctime_nsec).unwrap_or(0),
    }
}

/// How deep the folder at the top of a walk's stack of `len` folders is (the sink itself: 0).
fn stack_depth(len: usize) -> usize {
    len.saturating_sub(1)
}

/// Removes `name` of `parent` and everything under it; nothing there is not an error. Never follows a link
/// (a link is removed, not what it points to) and opens nothing but folders, at most [`MAX_DEPTH`] at once:
/// a folder deeper than that is first moved up into `parent` under a reserved name, then removed in turn.
pub(super) fn remove(parent: &Folder, name: &str) -> io::Result<()> {
    let mut tops = vec![name.to_owned()];
    let mut lifted = 0usize;
    while let Some(top) = tops.pop() {
        let folder = match parent.folder(&top) {
            Ok(folder) => folder,
            Err(Unreachable::Missing) => continue,
            // A file or a link where the folder was: that name is all there is to remove.
            Err(Unreachable::Other(_)) => {
                parent.remove_file(&top)?;
                continue;
            }
            Err(Unreachable::Failed(error)) => return Err(error),
        };
        let listing = folder.entries()?;
        let mut stack = vec![(folder, listing, top.clone().into())];
        loop {
            let depth = stack.len();
            let Some((folder, listing, _)) = stack.last_mut() else { break };
            let Some(entry) = listing.next() else {
                let Some((_, _, done)) = stack.pop() else { break };
                let above = stack.last().map_or(parent, |(folder, _, _)| folder);
                above.remove_folder(&done)?;
                continue;
            };
            let entry = entry?;
            let is_folder = folder.holds_folder(&entry);
            if !is_folder {
                folder.remove_file(&entry.name)?;
                continue;
            }
            if depth >= MAX_DEPTH {
                lifted += 1;
                let moved = format!("{RESERVED_PREFIX}-lifted-{}-{lifted}", std::process::id());
                folder.rename(&entry.name, parent, &moved)?;
                tops.push(moved);
                continue;
            }
            match folder.folder(&entry.name) {
                Ok(child) => {
                    let listing = child.entries()?;
                    stack.push((child, listing, entry.name));
                }
                Err(Unreachable::Missing) => {}
                Err(Unreachable::Other(_)) => {
                    folder.remove_file(&entry.name)?;
                }
                Err(Unreachable::Failed(error)) => return Err(error),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn root(dir: &Path) -> Folder {
        Folder::open_root(dir).unwrap()
    }

    #[test]
    fn the_walk_reports_files_links_and_what_lies_too_deep_and_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("sink");
        std::fs::create_dir_all(sink.join("year=2024")).unwrap();
        std::fs::write(sink.join("year=2024/part-0.parquet"), b"12345").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sink.join("link")).unwrap();
        let deep: String = (0..MAX_DEPTH + 3).map(|_| "d/").collect();
        std::fs::create_dir_all(sink.join(&deep)).unwrap();
        std::fs::write(sink.join(&deep).join("too-deep.parquet"), b"x").unwrap();
        let folder = root(dir.path()).folder("sink").unwrap();
        let mut entries = walk(&folder, usize::MAX).unwrap();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let kinds: Vec<(&str, EntryKind)> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
        let too_deep = "d/".repeat(MAX_DEPTH + 1);
        assert_eq!(
            kinds,
            [
                (too_deep.trim_end_matches('/'), EntryKind::TooDeep),
                ("link", EntryKind::Symlink),
                ("year=2024/part-0.parquet", EntryKind::File)
            ]
        );
        assert_eq!(entries[2].size_bytes, 5);
        assert_eq!(walk(&folder, 1).unwrap().len(), 1, "stops at its limit");
    }

    #[test]
    fn the_removal_takes_any_depth_and_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"not the sink's").unwrap();
        let sink = dir.path().join("sink");
        let deep: String = (0..3 * MAX_DEPTH + 5).map(|_| "d/").collect();
        std::fs::create_dir_all(sink.join(&deep)).unwrap();
        std::fs::write(sink.join(&deep).join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, sink.join("d/to-outside")).unwrap();
        let fifo = sink.join("d/d/fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap();
        remove(&root(dir.path()), "sink").unwrap();
        assert!(!sink.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"not the sink's");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["outside"], "nothing lifted is left");
        remove(&root(dir.path()), "sink").unwrap();
    }
}
