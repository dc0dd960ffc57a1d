//! Folders open by descriptor, and every name reached from one: the local backend never hands the kernel a
//! path of more than one component below a folder it holds open. Each name is opened with `openat` relative
//! to its folder, with `O_NOFOLLOW` (a symbolic link, wherever it is on the way, is refused rather than
//! followed) and `O_NONBLOCK` (a FIFO or a device does not wait for a peer), and what was opened is checked on
//! its descriptor before a byte is read. Whatever a worker plants where a folder or a file should be, a link,
//! a FIFO, a folder, it can neither redirect nor stall an open.

use std::{
    ffi::{OsStr, OsString},
    fs::{File, Metadata},
    io,
    os::{
        fd::OwnedFd,
        unix::{
            ffi::OsStrExt,
            fs::{FileTypeExt, MetadataExt},
        },
    },
    path::{Path, PathBuf},
};

use rustix::{
    fs::{AtFlags, Dir, FileType, Mode, OFlags},
    io::Errno,
};

/// A folder, open. Dropping it closes its descriptor.
#[derive(Debug)]
pub(super) struct Folder {
    fd: OwnedFd,
    /// Where it is, for messages and logs only: it is never opened by this path.
    path: PathBuf,
}

/// Why a name could not be reached as what was asked.
#[derive(Debug)]
pub(super) enum Unreachable {
    /// Nothing is there (or a folder on the way is missing).
    Missing,
    /// Something of another kind is: what it is ("a symbolic link", "a FIFO", "a folder", ...).
    Other(&'static str),
    /// The filesystem failed.
    Failed(io::Error),
}

impl From<io::Error> for Unreachable {
    fn from(error: io::Error) -> Self {
        Self::Failed(error)
    }
}

impl From<Unreachable> for io::Error {
    fn from(unreachable: Unreachable) -> Self {
        match unreachable {
            Unreachable::Missing => io::ErrorKind::NotFound.into(),
            Unreachable::Other(what) => io::Error::other(format!("{what} is where a folder or file should be")),
            Unreachable::Failed(error) => error,
        }
    }
}

/// The flags of every open by name: no link followed, no wait for a peer, not inherited by a child process,
/// never the controlling terminal.
const OPEN: OFlags = OFlags::NOFOLLOW.union(OFlags::NONBLOCK).union(OFlags::CLOEXEC).union(OFlags::NOCTTY);

impl Folder {
    /// The folder at `path`, an absolute path the configuration names (links in it are followed: it is the
    /// operator's, not a worker's).
    pub(super) fn open_root(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self { fd, path: path.to_owned() })
    }

    /// Where it is, for messages and logs.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Another descriptor of this folder.
    pub(super) fn try_clone(&self) -> io::Result<Self> {
        Ok(Self { fd: self.fd.try_clone()?, path: self.path.clone() })
    }

    /// The folder `name` (one component) in this one.
    pub(super) fn folder(&self, name: impl AsRef<OsStr>) -> Result<Self, Unreachable> {
        let name = name.as_ref();
        match rustix::fs::openat(&self.fd, name, OPEN | OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
            Ok(fd) => Ok(Self { fd, path: self.path.join(name) }),
            Err(Errno::NOENT) => Err(Unreachable::Missing),
            Err(Errno::LOOP | Errno::NOTDIR) => Err(Unreachable::Other(self.kind_of(name))),
            Err(errno) => Err(Unreachable::Failed(errno.into())),
        }
    }

    /// The folder at `relative` (`/`-separated components) below this one, each component opened in turn.
    pub(super) fn descend(&self, relative: &str) -> Result<Self, Unreachable> {
        let mut components = relative.split('/').filter(|part| !part.is_empty());
        let Some(first) = components.next() else { return Ok(self.try_clone()?) };
        components.try_fold(self.folder(first)?, |folder, name| folder.folder(name))
    }

    /// The regular file `name` in this folder, open for reading, with what its descriptor says of it.
    pub(super) fn file(&self, name: impl AsRef<OsStr>) -> Result<(File, Metadata), Unreachable> {
        let name = name.as_ref();
        let file = match rustix::fs::openat(&self.fd, name, OPEN | OFlags::RDONLY, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) => return Err(Unreachable::Missing),
            Err(Errno::LOOP) => return Err(Unreachable::Other("a symbolic link")),
            // A socket cannot be opened at all.
            Err(Errno::NXIO) => return Err(Unreachable::Other("a socket")),
            Err(errno) => return Err(Unreachable::Failed(errno.into())),
        };
        let meta = file.metadata()?;
        match meta.is_file() {
            true => Ok((file, meta)),
            false => Err(Unreachable::Other(kind(meta.file_type()))),
        }
    }

    /// What `name` in this folder is, without following it, as messages say it.
    fn kind_of(&self, name: &OsStr) -> &'static str {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => "a file",
                FileType::Directory => "a folder",
                FileType::Symlink => "a symbolic link",
                FileType::Fifo => "a FIFO",
                FileType::Socket => "a socket",
                FileType::CharacterDevice | FileType::BlockDevice => "a device",
                FileType::Unknown => "something of an unknown kind",
            },
            Err(_) => "something that vanished",
        }
    }

    /// What `name` in this folder is, without following it: its `lstat`.
    pub(super) fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<rustix::fs::Stat> {
        let name = name.as_ref();
        Ok(rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Makes the folder `name` with `mode` (the umask applies); `false` if something is there already.
    pub(super) fn make_folder(&self, name: &str, mode: u32) -> io::Result<bool> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Creates the file `name` with `mode`, open for writing; fails if anything is there.
    pub(super) fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let flags = OPEN | OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
        Ok(File::from(rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode))?))
    }

    /// Gives the file `name` of this folder the further name `to` in `folder` (a hard link; the link itself
    /// if `name` is one, never what it points to). Fails with `AlreadyExists` if `to` is taken.
    pub(super) fn link(&self, name: &str, folder: &Folder, to: &str) -> io::Result<()> {
        Ok(rustix::fs::linkat(&self.fd, name, &folder.fd, to, AtFlags::empty())?)
    }

    /// Renames `name` of this folder to `to` in `folder`, replacing nothing but an empty folder.
    pub(super) fn rename(&self, name: impl AsRef<OsStr>, folder: &Folder, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, name.as_ref(), &folder.fd, to)?)
    }

    /// Removes the name `name` (not a folder); `false` if it was not there.
    pub(super) fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, name.as_ref(), AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Removes the empty folder `name`; `false` if it was not there. A folder that is not empty (something was
    /// made in it meanwhile) fails.
    pub(super) fn remove_folder(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, name.as_ref(), AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Removes the folder `name` if it is empty; `false` if it was not there or is not empty.
    pub(super) fn remove_empty_folder(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        match rustix::fs::unlinkat(&self.fd, name.as_ref(), AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Gives this folder the group `group` (if one) and the mode `mode` (the umask aside): the group first,
    /// since a change of group may clear the setgid bit.
    pub(super) fn set_group_and_mode(&self, group: Option<u32>, mode: u32) -> io::Result<()> {
        set_owner_and_mode(&self.fd, None, group, mode)
    }

    /// Gives this folder the owner `user`, the group `group` and the mode `mode`.
    pub(super) fn set_owner(&self, user: u32, group: u32, mode: u32) -> io::Result<()> {
        set_owner_and_mode(&self.fd, Some(user), Some(group), mode)
    }

    /// What this folder's descriptor says of it (`fstat`).
    pub(super) fn own_stat(&self) -> io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::fstat(&self.fd)?)
    }

    /// Makes the entries made in this folder so far durable (`fsync`).
    pub(super) fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// The entries of this folder (not `.` and `..`), with their types as the folder tells them
    /// ([`FileType::Unknown`] where the filesystem does not say: then [`Folder::stat`] does). Read through a
    /// descriptor of their own, so that this folder's serves other opens meanwhile.
    pub(super) fn entries(&self) -> io::Result<Entries> {
        let fd = rustix::fs::openat(&self.fd, c".", OPEN | OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        Ok(Entries { dir: Dir::new(fd)? })
    }
}

/// The entries of a folder, read a buffer at a time.
pub(super) struct Entries {
    dir: Dir,
}

/// One entry of a folder: its name and the type the folder tells.
pub(super) struct Entry {
    pub name: OsString,
    pub kind: FileType,
}

impl Iterator for Entries {
    type Item = io::Result<Entry>;

    fn next(&mut self) -> Option<io::Result<Entry>> {
        loop {
            let entry = match self.dir.read()? {
                Ok(entry) => entry,
                Err(errno) => return Some(Err(errno.into())),
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            return Some(Ok(Entry { name: OsStr::from_bytes(name).to_owned(), kind: entry.file_type() }));
        }
    }
}

impl Folder {
    /// Whether `entry` of this folder is a folder (asking the filesystem when the folder's listing did not
    /// say), without following it.
    pub(super) fn holds_folder(&self, entry: &Entry) -> bool {
        match entry.kind {
            FileType::Directory => true,
            FileType::Unknown => {
                self.stat(&entry.name).is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Directory)
            }
            _ => false,
        }
    }
}

/// How messages name a kind of file.
fn kind(file_type: std::fs::FileType) -> &'static str {
    match () {
        () if file_type.is_dir() => "a folder",
        () if file_type.is_symlink() => "a symbolic link",
        () if file_type.is_fifo() => "a FIFO",
        () if file_type.is_socket() => "a socket",
        () if file_type.is_char_device() || file_type.is_block_device() => "a device",
        () if file_type.is_file() => "a file",
        () => "something of an unknown kind",
    }
}

/// Whether a file has names elsewhere too (hard links).
/// Gives what `fd` is open on the owner `user` and the group `group` (each if one), then the mode `mode`: the
/// owners first, since a change of them may clear the setuid and setgid bits.
pub(super) fn set_owner_and_mode(
    fd: impl std::os::fd::AsFd,
    user: Option<u32>,
    group: Option<u32>,
    mode: u32,
) -> io::Result<()> {
    if user.is_some() || group.is_some() {
        rustix::fs::fchown(&fd, user.map(rustix::fs::Uid::from_raw), group.map(rustix::fs::Gid::from_raw))?;
    }
    Ok(rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?)
}

pub(super) fn has_other_names(meta: &Metadata) -> bool {
    meta.nlink() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_folders_are_refused_where_a_file_or_folder_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let root = Folder::open_root(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        std::fs::write(dir.path().join("folder/file"), b"bytes").unwrap();
        std::os::unix::fs::symlink("folder", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("folder/file", dir.path().join("file-link")).unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();

        let (_, meta) = root.descend("folder").unwrap().file("file").unwrap();
        assert_eq!(meta.len(), 5);
        assert!(matches!(root.descend("link/file"), Err(Unreachable::Other("a symbolic link"))));
        assert!(matches!(root.file("file-link"), Err(Unreachable::Other("a symbolic link"))));
        // Opened without waiting for a writer, and refused by what the descriptor says.
        assert!(matches!(root.file("fifo"), Err(Unreachable::Other("a FIFO"))));
        assert!(matches!(root.file("folder"), Err(Unreachable::Other("a folder"))));
        assert!(matches!(root.folder("fifo"), Err(Unreachable::Other("a FIFO"))));
        assert!(matches!(root.descend("folder/file"), Err(Unreachable::Other("a file"))));
        assert!(matches!(root.descend("nothing/here"), Err(Unreachable::Missing)));
        let mut names: Vec<String> =
            root.entries().unwrap().map(|e| e.unwrap().name.to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["fifo", "file-link", "folder", "link"]);
    }
}
