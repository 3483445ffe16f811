//! A small ext4 filesystem on a loop device (a real block filesystem that can run out of
//! blocks; tmpfs behaves differently), unmounted and detached when dropped, also on a panic.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LoopDisk {
    pub mount: PathBuf,
    image: PathBuf,
    device: Option<String>,
    mounted: bool,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopDisk {
    /// An ext4 image of `mib` MiB in `dir` (mke2fs picks 1 KiB blocks at this size), mounted on
    /// `dir/disk`. Err says why loop devices are unusable here.
    pub fn new(dir: &Path, mib: u64) -> Result<LoopDisk, String> {
        if !Path::new("/dev/loop-control").exists() {
            return Err("no /dev/loop-control (loop devices unavailable)".into());
        }
        let mut disk = LoopDisk {
            mount: dir.join("disk"),
            image: dir.join("disk.img"),
            device: None,
            mounted: false,
        };
        std::fs::File::create(&disk.image)
            .and_then(|f| f.set_len(mib << 20))
            .map_err(|e| format!("{}: {e}", disk.image.display()))?;
        run(Command::new("mkfs.ext4")
            .arg("-q")
            .arg("-F")
            .arg(&disk.image))?;
        disk.device = Some(run(Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&disk.image))?);
        std::fs::create_dir_all(&disk.mount).map_err(|e| e.to_string())?;
        run(Command::new("mount")
            .arg(disk.device.as_ref().unwrap())
            .arg(&disk.mount))?;
        disk.mounted = true;
        Ok(disk)
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// Fills the filesystem until writes fail with ENOSPC, then gives back `leave_kib` KiB.
    pub fn fill(&self, leave_kib: u64) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .unwrap();
        for chunk in [64 << 10, 1 << 10] {
            let buf = vec![0x5a_u8; chunk];
            loop {
                match f.write(&buf) {
                    Ok(n) if n == chunk => {}
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling {}: {e}", self.filler().display()),
                }
            }
        }
        f.sync_all().unwrap();
        if leave_kib > 0 {
            let len = f.metadata().unwrap().len();
            f.set_len(len.saturating_sub(leave_kib << 10)).unwrap();
            f.sync_all().unwrap();
        }
        // SAFETY: a plain syscall on an open file.
        unsafe { libc::syncfs(f.as_raw_fd()) };
    }

    /// Deletes the filler: the space is back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.mounted && run(Command::new("umount").arg(&self.mount)).is_err() {
            // Busy (a process of a failed test still inside): detach it lazily.
            let _ = run(Command::new("umount").arg("-l").arg(&self.mount));
        }
        if let Some(dev) = &self.device {
            let _ = run(Command::new("losetup").arg("-d").arg(dev));
        }
        let _ = std::fs::remove_file(&self.image);
    }
}
