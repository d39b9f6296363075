//! One fsync for many log groups: a broker hosting tens of groups would otherwise issue one
//! `fdatasync` per group per group commit, each a device cache flush. With a [`SyncBatcher`]
//! the groups' writer threads hand their segments to one sync thread, which makes every
//! request gathered while the previous sync ran durable together: one `syncfs` of the data
//! filesystem when several groups wait, the plain `fdatasync`s when one does. (The broker's
//! data filesystem holds its own data, so a `syncfs` flushes little else.)

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::segment::Segment;

/// A sync request: the segments one group commit wrote, and where to answer.
struct Request {
    segments: Vec<Arc<Segment>>,
    done: std::sync::mpsc::SyncSender<Result<(), (io::ErrorKind, String)>>,
}

#[derive(Default)]
struct State {
    pending: Vec<Request>,
    stop: bool,
}

/// Makes the writes of many log groups durable together.
pub struct SyncBatcher {
    dir: PathBuf,
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SyncBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncBatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SyncBatcher {
    /// A batcher for groups whose files live on the filesystem of `dir`.
    pub fn start(dir: &Path) -> io::Result<Arc<SyncBatcher>> {
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let worker = state.clone();
        let worker_dir = dir.to_owned();
        let thread = std::thread::Builder::new()
            .name("sync".into())
            .spawn(move || run(&worker_dir, &worker))?;
        Ok(Arc::new(SyncBatcher {
            dir: dir.to_owned(),
            state,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Makes `segments` durable (with whatever else is waiting); blocks until then.
    pub(crate) fn sync(&self, segments: Vec<Arc<Segment>>) -> io::Result<()> {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        {
            let (lock, wake) = &*self.state;
            let mut state = lock.lock().expect("sync lock poisoned");
            if state.stop {
                return Err(io::Error::other("the sync thread has stopped"));
            }
            state.pending.push(Request { segments, done });
            wake.notify_one();
        }
        match answer.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err((kind, message))) => Err(io::Error::new(kind, message)),
            Err(_) => Err(io::Error::other("the sync thread has stopped")),
        }
    }

    /// Stops the sync thread once the pending requests are answered.
    pub fn stop(&self) {
        {
            let (lock, wake) = &*self.state;
            lock.lock().expect("sync lock poisoned").stop = true;
            wake.notify_all();
        }
        if let Some(t) = self.thread.lock().expect("sync lock poisoned").take() {
            let _ = t.join();
        }
    }
}

fn run(dir: &Path, state: &(Mutex<State>, Condvar)) {
    use std::os::fd::AsRawFd;
    let (lock, wake) = state;
    // Kept open for the batcher's life: `syncfs` reports the filesystem's writeback errors
    // that happened since this descriptor was opened, so a fresh one per sync could miss an
    // error of background writeback.
    let fs = std::fs::File::open(dir);
    loop {
        let batch = {
            let mut s = lock.lock().expect("sync lock poisoned");
            while s.pending.is_empty() && !s.stop {
                s = wake.wait(s).expect("sync lock poisoned");
            }
            if s.pending.is_empty() {
                return;
            }
            std::mem::take(&mut s.pending)
        };
        let started = std::time::Instant::now();
        let result = match &fs {
            Ok(fs) if batch.len() > 1 => {
                // SAFETY: plain syscall on an owned, open descriptor.
                if unsafe { libc::syncfs(fs.as_raw_fd()) } == 0 {
                    // Segments of another backend than real files are not on the
                    // filesystem: each syncs itself.
                    batch
                        .iter()
                        .flat_map(|r| &r.segments)
                        .filter(|s| !s.on_filesystem())
                        .try_for_each(|s| s.sync())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            _ => batch
                .iter()
                .flat_map(|r| &r.segments)
                .try_for_each(|s| s.sync()),
        };
        metrics::histogram!("meridian_sync_batch_requests").record(batch.len() as f64);
        metrics::histogram!("meridian_sync_seconds").record(started.elapsed().as_secs_f64());
        let answer = result.map_err(|e| (e.kind(), e.to_string()));
        for request in batch {
            let _ = request.done.send(answer.clone());
        }
    }
}

impl Drop for SyncBatcher {
    fn drop(&mut self) {
        self.stop();
    }
}
