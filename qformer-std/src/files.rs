//! Files from and to the outside world: inputs that must be regular files of a bounded
//! size, and outputs written through a temporary file without ever replacing what they
//! must not.
//!
//! Inputs ([`open_regular`], [`read_bounded`]): opened without blocking (a FIFO given as an
//! input cannot hang the tool) and refused unless they are regular files, so `/dev/zero` or
//! a FIFO is an error instead of an endless read; a file larger than the caller's limit or
//! than the memory available is refused before anything is allocated; a file that changes
//! size while being read is an error.
//!
//! Outputs ([`Output`]): a symbolic link is followed and its target written; an existing
//! output that is not a regular file (`/dev/null`, a FIFO, a terminal) is opened and written
//! directly, never replaced; a regular file is written through a hidden temporary file in
//! the same directory and renamed over the target, so a failure never leaves a partial file.
//! An output that is the same file as one of the command's inputs (compared by device and
//! inode, so also through links) is refused. A new file gets `0666 & !umask`, an existing one
//! keeps its mode. With [`remove_temporaries_on_signals`], SIGINT, SIGTERM and SIGHUP remove
//! the temporary files (and directories registered with [`CreatedDir`]) before the process
//! dies of the signal.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};

/// What a file is, in words (`a FIFO`), for messages.
pub fn kind(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

/// An operating-system error on a file, with its message as the command line shows it (the
/// OS's words inside it). Callers that sort errors (the Python module's `FileError`) find it
/// with `anyhow::Error::downcast_ref`; its `Display` is the message alone.
#[derive(Debug)]
pub struct OsError {
    /// What the user reads.
    pub message: String,
    /// The OS's error kind.
    pub kind: std::io::ErrorKind,
}

impl std::fmt::Display for OsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OsError {}

impl OsError {
    /// `message` about the OS error `e`.
    pub fn error(message: String, e: &std::io::Error) -> anyhow::Error {
        anyhow::Error::new(OsError { message, kind: e.kind() })
    }
}

/// The error of opening `path`: "does not exist" for a missing file, the OS's words otherwise.
fn open_error(path: &Path, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        OsError::error(format!("{} does not exist", path.display()), &e)
    } else {
        OsError::error(format!("cannot open {}: {e}", path.display()), &e)
    }
}

/// Fails unless `path` names a regular file (following links); the message says what it is
/// instead. Opens nothing, so a FIFO cannot block.
pub fn require_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| open_error(path, e))?;
    if !meta.is_file() {
        bail!("{} is not a regular file (it is {})", path.display(), kind(&meta.file_type()));
    }
    Ok(())
}

/// Opens `path` for reading if it is a regular file, with its length. A FIFO or device is
/// refused without blocking on it (the open does not wait for a writer).
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Reads of a regular file ignore O_NONBLOCK; it only keeps a FIFO's open from waiting.
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let f = opts.open(path).map_err(|e| open_error(path, e))?;
    let meta = f.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file (it is {})", path.display(), kind(&meta.file_type()));
    }
    Ok((f, meta.len()))
}

/// `MemAvailable` of `/proc/meminfo` in bytes, where the system says it.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Fails when `len` bytes of `path` are more than `limit` (`what` says whose limit) or than
/// the memory available.
pub fn check_size(path: &Path, len: u64, limit: u64, what: &str) -> Result<()> {
    if len > limit {
        bail!("{} is {len} bytes, more than {what} ({limit} bytes)", path.display());
    }
    if let Some(avail) = available_memory().filter(|&a| len > a) {
        bail!("{} is {len} bytes, more than the {avail} bytes of memory available to read it into", path.display());
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes from `f` and checks that the file ends there.
pub fn read_whole(f: &mut File, buf: &mut [u8], path: &Path) -> Result<()> {
    f.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            anyhow!("{} became shorter while it was being read", path.display())
        } else {
            OsError::error(format!("cannot read {}: {e}", path.display()), &e)
        }
    })?;
    let mut probe = [0u8; 1];
    match f.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => bail!("{} became longer while it was being read", path.display()),
        Err(e) => Err(OsError::error(format!("cannot read {}: {e}", path.display()), &e)),
    }
}

/// The whole of the regular file `path`, refused beforehand when it is longer than `limit`
/// bytes (`what` names the limit in the message) or than the memory available.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let (mut f, len) = open_regular(path)?;
    check_size(path, len, limit, what)?;
    let len = usize::try_from(len).map_err(|_| anyhow!("{} is too large for this machine", path.display()))?;
    let mut bytes = vec![0u8; len];
    read_whole(&mut f, &mut bytes, path)?;
    Ok(bytes)
}

/// Something to remove when a signal ends the process.
enum Pending {
    File(PathBuf),
    Dir(PathBuf),
}

/// Temporary files and created directories that a signal must not leave behind.
static PENDING: Mutex<Vec<(u64, Pending)>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn pending() -> MutexGuard<'static, Vec<(u64, Pending)>> {
    // A panic while holding the lock leaves the list as valid as before: use it anyway.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registered for removal on a signal until dropped.
struct Registration(u64);

impl Registration {
    fn new(p: Pending) -> Registration {
        Registration::new_in(&mut pending(), p)
    }
    /// Registers `p` while `list` is held.
    fn new_in(list: &mut Vec<(u64, Pending)>, p: Pending) -> Registration {
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        list.push((id, p));
        Registration(id)
    }
    /// Forgets the entry while `list` is held.
    fn forget_in(&self, list: &mut Vec<(u64, Pending)>) {
        list.retain(|(id, _)| *id != self.0);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.forget_in(&mut pending());
    }
}

/// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, removes every temporary output file
/// and registered directory, then ends the process as the signal would have (so the parent
/// sees the signal). Call once, early in `main`.
pub fn remove_temporaries_on_signals() -> Result<()> {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        // A signal ignored at start stays ignored: `nohup` ignores SIGHUP, and a shell's
        // background job SIGINT; catching them would end such a run after all.
        let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&s| !is_ignored(s)).collect();
        let mut signals = signal_hook::iterator::Signals::new(wanted).context("cannot install signal handlers")?;
        // An explicit small stack: the thread only removes files, and RUST_MIN_STACK must
        // not decide whether it starts.
        std::thread::Builder::new()
            .name("signals".into())
            .stack_size(256 << 10)
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    // Held until the process ends: no new temporary file, no rename, after this.
                    let mut list = pending();
                    for (_, p) in list.iter() {
                        let _ = match p {
                            Pending::File(f) => std::fs::remove_file(f),
                            Pending::Dir(d) => std::fs::remove_dir_all(d),
                        };
                    }
                    list.clear();
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                    std::process::exit(128 + sig);
                }
            })
            .context("cannot start the signal thread")?;
    }
    Ok(())
}

/// Whether `sig`'s disposition is "ignore" (as inherited from the parent).
#[cfg(unix)]
fn is_ignored(sig: i32) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only writes the current one into `old`,
    // a valid, writable sigaction (zeroed, so every field is initialised either way).
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: zero-initialised above and possibly overwritten by the kernel: initialised.
    let old = unsafe { old.assume_init() };
    rc == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// A directory this process creates, removed (with its contents) when dropped before
/// [`CreatedDir::keep`] or when a signal arrives: a failed or interrupted command leaves no
/// directory behind. Only the directories it actually created are removed.
pub struct CreatedDir {
    /// The topmost directory created, if any (`None`: it existed already).
    top: Option<PathBuf>,
    _registration: Option<Registration>,
}

impl CreatedDir {
    /// Creates `dir` and its missing parents.
    pub fn create(dir: &Path) -> Result<CreatedDir> {
        let mut top = None;
        let mut p = Some(dir);
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            if std::fs::symlink_metadata(d).is_ok() {
                break;
            }
            top = Some(d.to_path_buf());
            p = d.parent();
        }
        let registration = top.clone().map(|t| Registration::new(Pending::Dir(t)));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(CreatedDir { top, _registration: registration })
    }

    /// Keeps the directory.
    pub fn keep(mut self) {
        self.top = None;
    }
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(t) = &self.top {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

/// Follows symbolic links from `path` to the file they name (which need not exist).
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p).with_context(|| format!("cannot read link {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

/// Whether two metadata describe the same file.
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// How an output is written.
enum Sink {
    /// A regular file (new or existing): a temporary file renamed over `target`.
    Replace {
        tmp: tempfile::NamedTempFile,
        /// The existing file's mode, kept.
        mode: Option<u32>,
        _registration: Registration,
    },
    /// An existing special file (device, FIFO): written in place.
    Direct(PathBuf),
}

/// An output file being prepared: create it before the work (so a refused output fails
/// fast), [`Output::write`] it after.
pub struct Output {
    /// As given by the user.
    path: PathBuf,
    /// Where the bytes go (links resolved).
    target: PathBuf,
    sink: Sink,
}

impl Output {
    /// Prepares writing `path`, refusing it when it is (through any links) the same file as
    /// one of `inputs`, or a directory. For a regular output this creates the hidden
    /// temporary file at once, removed again if the command fails or is interrupted.
    pub fn create(path: &Path, inputs: &[&Path]) -> Result<Output> {
        let target = resolve_links(path)?;
        let meta = match std::fs::metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => bail!("cannot stat {}: {e}", target.display()),
        };
        if let Some(m) = &meta {
            if m.is_dir() {
                bail!("{} is a directory; give a file name", path.display());
            }
            for input in inputs {
                if std::fs::metadata(input).is_ok_and(|i| same_file(m, &i)) {
                    bail!(
                        "refusing to write {}: it is the same file as the input {}, which would be destroyed",
                        path.display(),
                        input.display()
                    );
                }
            }
        }
        let sink = match meta {
            Some(m) if !m.is_file() => Sink::Direct(target.clone()),
            meta => {
                let dir = match target.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                #[cfg(unix)]
                let mode = {
                    use std::os::unix::fs::PermissionsExt;
                    meta.map(|m| m.permissions().mode() & 0o7777)
                };
                #[cfg(not(unix))]
                let mode = meta.map(|_| 0);
                let mut builder = tempfile::Builder::new();
                builder.prefix(".qformer-").suffix(".tmp");
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    // The open applies the umask: a new output gets 0666 & !umask.
                    builder.permissions(std::fs::Permissions::from_mode(0o666));
                }
                // Created and registered under the lock: a signal meanwhile waits for it,
                // then finds the file registered.
                let mut list = pending();
                let tmp = builder
                    .tempfile_in(&dir)
                    .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
                let registration = Registration::new_in(&mut list, Pending::File(tmp.path().to_path_buf()));
                drop(list);
                Sink::Replace { tmp, mode, _registration: registration }
            }
        };
        Ok(Output { path: path.to_path_buf(), target, sink })
    }

    /// Writes `bytes` as the whole output.
    pub fn write(self, bytes: &[u8]) -> Result<()> {
        let Output { path, target, sink } = self;
        match sink {
            Sink::Direct(p) => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .with_context(|| format!("cannot open {} for writing", path.display()))?;
                f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
                f.flush().with_context(|| format!("cannot write {}", path.display()))?;
            }
            Sink::Replace { mut tmp, mode, _registration } => {
                // The file's own error, without tempfile's note of the hidden name.
                let f = tmp.as_file_mut();
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                #[cfg(unix)]
                if let Some(mode) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    tmp.as_file()
                        .set_permissions(std::fs::Permissions::from_mode(mode))
                        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
                }
                #[cfg(not(unix))]
                let _ = mode;
                // Under the lock, a signal either removes the temporary file before the
                // rename or finds it renamed.
                let mut list = pending();
                match tmp.persist(&target) {
                    Ok(_) => {
                        _registration.forget_in(&mut list);
                        drop(list);
                    }
                    Err(e) => {
                        drop(list);
                        // Dropping the file removes it; the registration goes after it.
                        let error = e.error;
                        drop(e.file);
                        return Err(error).with_context(|| format!("cannot write {}", path.display()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename
/// (see [`Output`]), so a failure never leaves a partial file at `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Output::create(path, &[])?.write(bytes)
}
