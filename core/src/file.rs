//! Files and directories custody creates, and files it reads from directories other people
//! write to.
//!
//! What it owns: the modes of everything custody creates (directories 0700, files 0600,
//! whatever the umask: a mode given to `open`/`mkdir` can only lose bits to the umask, never
//! gain them), and how untrusted names are opened (`O_NOFOLLOW | O_NONBLOCK`, regular files
//! only, so that a symlink, a FIFO or a device in the spool can neither redirect custody nor
//! make it wait). It never decides *where* files go; callers do.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mode of the directories custody creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files custody creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents with mode 0700. Existing directories are left as
/// they are.
pub fn create_private_dir_all(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Creates `path` with mode 0600, or does nothing when it exists. Never follows a symlink
/// at `path`.
pub fn create_private_file(path: &Path) -> Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `bytes` to `path` (created 0600, or truncated), never following a symlink.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))
}

/// The effective uid of this process (the owner of `/proc/self`).
pub fn effective_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok()
}

/// Takes away group and other permissions from `path` when this process owns it; returns
/// the old mode when it changed something. For files custody created under an older
/// version, or under a umask that let others in.
pub fn tighten(path: &Path) -> Result<Option<u32>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if !meta.file_type().is_file() || mode & 0o077 == 0 || Some(meta.uid()) != effective_uid() {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(mode))
}

/// Why a name in an untrusted directory was not opened.
#[derive(Debug)]
pub enum Untrusted {
    /// There is nothing at that name.
    Missing,
    /// Something other than a regular file: a symlink, a FIFO, a device, a directory…
    NotRegular(&'static str),
    /// It could not be opened or read.
    Io(std::io::Error),
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => write!(f, "no such file"),
            Self::NotRegular(kind) => write!(f, "is a {kind}, not a regular file"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// What kind of file `t` is, for messages ("FIFO (named pipe)", "symbolic link", …).
pub fn kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() || t.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

/// Opens `path` for reading only if it is a regular file: `O_NOFOLLOW` (a symlink is
/// refused, not followed) and `O_NONBLOCK` (opening a FIFO does not wait for a writer), then
/// the type is checked on the open descriptor, so nothing can be swapped in between.
pub fn open_regular(path: &Path) -> std::result::Result<File, Untrusted> {
    open_checked(path, libc::O_NOFOLLOW)
}

/// [`open_regular`] for a file the administrator named (a PIN file, the allowed_signers
/// file): a symlink is followed, but what it leads to must be a regular file, and a FIFO is
/// refused without waiting.
pub fn open_regular_following(path: &Path) -> std::result::Result<File, Untrusted> {
    open_checked(path, 0)
}

fn open_checked(path: &Path, flags: i32) -> std::result::Result<File, Untrusted> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Untrusted::Missing),
        // ELOOP: the last component is a symlink.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Untrusted::NotRegular("symbolic link"))
        }
        Err(e) => {
            // Opening some devices fails outright (ENXIO for a FIFO opened for writing,
            // EACCES, …): name the type when it is not a regular file.
            return match std::fs::symlink_metadata(path) {
                Ok(m) if !m.file_type().is_file() => {
                    Err(Untrusted::NotRegular(kind(m.file_type())))
                }
                _ => Err(Untrusted::Io(e)),
            };
        }
    };
    let meta = file.metadata().map_err(Untrusted::Io)?;
    if !meta.file_type().is_file() {
        return Err(Untrusted::NotRegular(kind(meta.file_type())));
    }
    Ok(file)
}

/// Reads at most `cap` bytes of the regular file at `path` (see [`open_regular`]); returns
/// them and the file's size.
pub fn read_regular_capped(
    path: &Path,
    cap: usize,
) -> std::result::Result<(Vec<u8>, u64), Untrusted> {
    let file = open_regular(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(cap.min(size as usize + 1));
    file.take(cap as u64)
        .read_to_end(&mut bytes)
        .map_err(Untrusted::Io)?;
    Ok((bytes, size))
}

/// A directory opened without following a symlink. Names are resolved in that very
/// directory (through `/proc/self/fd`), so replacing it by a link after it was opened
/// changes nothing: custody never writes through a link planted in the spool.
#[derive(Debug)]
pub struct OpenDir {
    dir: File,
    path: PathBuf,
}

impl OpenDir {
    /// Opens `path`, creating it (0700) when missing. A symlink, or anything but a
    /// directory, is refused.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        let refuse = |what: &str| {
            Error::Refused(format!(
                "{} is {what}; custody writes only into real directories there. Replace it with a directory (`install -d -m 0700 {}`)",
                path.display(),
                path.display()
            ))
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => return Err(refuse("a symbolic link")),
            Ok(m) if !m.is_dir() => return Err(refuse("not a directory")),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private_dir_all(path)?,
            Err(e) => return Err(Error::io(path, e)),
        }
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => refuse("a symbolic link"),
                Some(libc::ENOTDIR) => refuse("not a directory"),
                _ => Error::io(path, e),
            })?;
        Ok(Self {
            dir,
            path: path.to_owned(),
        })
    }

    /// `name` inside the opened directory, as a path the kernel resolves through the open
    /// descriptor.
    pub fn entry(&self, name: &std::ffi::OsStr) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(name)
    }

    /// The directory's path as given, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("custody-file-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    #[test]
    fn a_fifo_a_symlink_and_a_directory_are_refused_without_blocking() {
        let d = dir("untrusted");
        let fifo = d.join("x.json.sig");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        assert!(st.success());
        std::fs::write(d.join("real"), b"ok").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(d.join("real"), d.join("link"))
            .unwrap_or_else(|e| panic!("{e}"));
        let start = std::time::Instant::now();
        let e = open_regular(&fifo).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("is a FIFO (named pipe), not a regular file")
        );
        let e = open_regular(&d.join("link")).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("is a symbolic link, not a regular file"));
        let e = open_regular(&d).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("is a directory, not a regular file"));
        let e = open_regular(Path::new("/dev/null"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("is a device, not a regular file"));
        assert!(matches!(
            open_regular(&d.join("absent")),
            Err(Untrusted::Missing)
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let (bytes, size) =
            read_regular_capped(&d.join("real"), 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((bytes.as_slice(), size), (&b"ok"[..], 2));
        // A directory that is a link is refused; one swapped for a link after it was opened
        // is still the directory that was opened.
        std::fs::create_dir(d.join("real-dir")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(d.join("real-dir"), d.join("dir-link"))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = OpenDir::open_or_create(&d.join("dir-link"))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("is a symbolic link"));
        let sub = d.join("sub");
        let open = OpenDir::open_or_create(&sub).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&sub, d.join("sub-moved")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(d.join("real-dir"), &sub).unwrap_or_else(|e| panic!("{e}"));
        write_private(&open.entry("note".as_ref()), b"x").unwrap_or_else(|e| panic!("{e}"));
        assert!(d.join("sub-moved/note").exists());
        assert!(!d.join("real-dir/note").exists());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn private_files_and_dirs_ignore_the_umask_and_tighten_fixes_old_files() {
        let d = dir("modes");
        let sub = d.join("a/b");
        create_private_dir_all(&sub).unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&d.join("a")), 0o700);
        let f = sub.join("f");
        create_private_file(&f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&f), 0o600);
        let old = sub.join("old");
        std::fs::write(&old, b"x").unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o666))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tighten(&old).ok().flatten(), Some(0o666));
        assert_eq!(mode(&old), 0o600);
        assert_eq!(tighten(&old).ok().flatten(), None);
        let _ = std::fs::remove_dir_all(d);
    }
}
