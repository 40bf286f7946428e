//! Slice segments: sealed slices appended to large segment files, with their
//! locations (segment, offset, length) indexed in fjall. One file per slice
//! made the kernel's inode allocation the write path's largest cost; fjall's
//! own value log wrote every slice twice. A removed slice's range is punched
//! out of its segment, so the disk space comes back at once.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::mem::MaybeUninit;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use fjall::PartitionHandle;

use crate::hash::Hash;
use crate::keys::TAG_LEN;
use crate::model::{SealedSlice, SliceSeal};
use crate::store_error::{file_error, StoreError, StoreResult};

/// Segments are closed at this size and a new one is started.
pub const SEGMENT_LIMIT: u64 = 1 << 30;

const LOCATION_LEN: usize = 16;

/// Where a slice's encoding sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    segment: u32,
    offset: u64,
    len: u32,
}

impl Location {
    fn encode(&self) -> [u8; LOCATION_LEN] // PA
    {
        let mut out = [0u8; LOCATION_LEN];
        out[..4].copy_from_slice(&self.segment.to_be_bytes());
        out[4..12].copy_from_slice(&self.offset.to_be_bytes());
        out[12..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> StoreResult<Self> // PA
    {
        let bytes: &[u8; LOCATION_LEN] =
            bytes.try_into().map_err(|_| StoreError::BadIndexEntry { index: "slice_locations", len: bytes.len() })?;
        let mut segment = [0u8; 4];
        let mut offset = [0u8; 8];
        let mut len = [0u8; 4];
        segment.copy_from_slice(&bytes[..4]);
        offset.copy_from_slice(&bytes[4..12]);
        len.copy_from_slice(&bytes[12..]);
        Ok(Location {
            segment: u32::from_be_bytes(segment),
            offset: u64::from_be_bytes(offset),
            len: u32::from_be_bytes(len),
        })
    }
}

/// Decode a slice-index entry, for the fuzz targets in `fuzz/`.
#[cfg(fuzzing)]
pub fn decode_location(bytes: &[u8]) -> StoreResult<(u32, u64, u32)> // PA
{
    Location::decode(bytes).map(|l| (l.segment, l.offset, l.len))
}

struct Active {
    id: u32,
    file: Arc<File>,
    len: u64,
}

pub struct SliceLog {
    dir: PathBuf,
    index: PartitionHandle,
    active: Mutex<Active>,
    segments: RwLock<HashMap<u32, Arc<File>>>,
}

fn segment_path(dir: &Path, id: u32) -> PathBuf // PA
{
    dir.join(format!("{id:08}.seg"))
}

fn create_segment(dir: &Path, id: u32) -> StoreResult<Arc<File>> // PA
{
    let path = segment_path(dir, id);
    let file = OpenOptions::new().create_new(true).read(true).write(true).open(&path);
    Ok(Arc::new(file.map_err(file_error("creating", &path))?))
}

impl SliceLog {
    /// Open the segments in `dir` and start a fresh one for new writes (the
    /// tail of the last one may hold a partial record from a crash).
    pub fn open(dir: &Path, index: PartitionHandle) -> StoreResult<Self> // PA
    {
        fs::create_dir_all(dir).map_err(file_error("creating", dir))?;
        let mut newest = 0u32;
        for entry in fs::read_dir(dir).map_err(file_error("listing", dir))? {
            let entry = entry.map_err(file_error("listing", dir))?;
            let name = entry.file_name();
            let id = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse::<u32>().ok());
            newest = newest.max(id.unwrap_or(0));
        }
        let id = newest + 1;
        let file = create_segment(dir, id)?;
        let segments = RwLock::new(HashMap::from([(id, file.clone())]));
        Ok(SliceLog { dir: dir.to_path_buf(), index, active: Mutex::new(Active { id, file, len: 0 }), segments })
    }

    pub fn contains(&self, hash: &Hash) -> StoreResult<bool> // PA
    {
        Ok(self.index.contains_key(hash.as_bytes())?)
    }

    /// Append a slice unless it is already stored. Durable only after `sync`
    /// (or, for a killed process, as soon as this returns).
    pub fn put(&self, slice: &SealedSlice) -> StoreResult<()> // PA
    {
        if self.contains(&slice.hash)? {
            return Ok(());
        }
        let header = slice.header();
        let len = (header.len() + slice.payload.len()) as u64;
        let record_len =
            u32::try_from(len).map_err(|_| StoreError::BadIndexEntry { index: "slice size", len: len as usize })?;
        // Reserve the range under the lock; copy the bytes outside it so
        // writers of different slices proceed in parallel.
        let (id, file, offset) = {
            let mut active = self.active.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if active.len > 0 && active.len + len > SEGMENT_LIMIT {
                self.rotate(&mut active)?;
            }
            let offset = active.len;
            active.len += len;
            (active.id, active.file.clone(), offset)
        };
        let path = || segment_path(&self.dir, id);
        file.write_all_at(&header, offset).map_err(file_error("writing", &path()))?;
        file.write_all_at(&slice.payload, offset + header.len() as u64).map_err(file_error("writing", &path()))?;
        let location = Location { segment: id, offset, len: record_len };
        self.index.insert(slice.hash.as_bytes(), location.encode())?;
        Ok(())
    }

    fn rotate(&self, active: &mut Active) -> StoreResult<()> // PA
    {
        let old = segment_path(&self.dir, active.id);
        active.file.sync_data().map_err(file_error("syncing", &old))?;
        let id = active.id + 1;
        let file = create_segment(&self.dir, id)?;
        self.segments.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id, file.clone());
        *active = Active { id, file, len: 0 };
        Ok(())
    }

    /// Flush the active segment to the disk.
    pub fn sync(&self) -> StoreResult<()> // PA
    {
        let (id, file) = {
            let active = self.active.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (active.id, active.file.clone())
        };
        file.sync_data().map_err(file_error("syncing", &segment_path(&self.dir, id)))
    }

    fn segment(&self, id: u32) -> StoreResult<Arc<File>> // PA
    {
        if let Some(file) = self.segments.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&id) {
            return Ok(file.clone());
        }
        let path = segment_path(&self.dir, id);
        let file =
            Arc::new(OpenOptions::new().read(true).write(true).open(&path).map_err(file_error("opening", &path))?);
        self.segments.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id, file.clone());
        Ok(file)
    }

    /// Where a slice is stored, if it is.
    fn location(&self, hash: &Hash) -> StoreResult<Option<Location>> // PA
    {
        match self.index.get(hash.as_bytes())? {
            Some(bytes) => Ok(Some(Location::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn get(&self, hash: &Hash) -> StoreResult<Option<SealedSlice>> // PA
    {
        let Some(location) = self.location(hash)? else { return Ok(None) };
        let file = self.segment(location.segment)?;
        let path = || segment_path(&self.dir, location.segment);
        let header_len = (location.len as usize).min(SealedSlice::HEADER_LEN);
        let mut header = [0u8; SealedSlice::HEADER_LEN];
        file.read_exact_at(&mut header[..header_len], location.offset).map_err(file_error("reading", &path()))?;
        let payload = read_uninit_at(&file, location.len as usize - header_len, location.offset + header_len as u64)
            .map_err(file_error("reading", &path()))?;
        Ok(Some(SealedSlice::decode_parts(hash, &header[..header_len], payload)?))
    }

    /// Read a slice's ciphertext into `ciphertext`, which must be exactly
    /// its length, and return the slice's nonce and tag, so a reader can
    /// gather several slices into one buffer. `None` when the slice is not
    /// stored or is not that long.
    pub fn read_parts(&self, hash: &Hash, ciphertext: &mut [MaybeUninit<u8>]) -> StoreResult<Option<SliceSeal>> // PA
    {
        let Some(location) = self.location(hash)? else { return Ok(None) };
        let header_len = SealedSlice::HEADER_LEN;
        if location.len as usize != header_len + ciphertext.len() + TAG_LEN {
            return Ok(None);
        }
        let file = self.segment(location.segment)?;
        let path = || segment_path(&self.dir, location.segment);
        let mut header = [0u8; SealedSlice::HEADER_LEN];
        file.read_exact_at(&mut header, location.offset).map_err(file_error("reading", &path()))?;
        let nonce = SealedSlice::decode_header(hash, &header)?;
        let at = location.offset + header_len as u64;
        pread_exact(&file, ciphertext, at).map_err(file_error("reading", &path()))?;
        let mut tag = [0u8; TAG_LEN];
        file.read_exact_at(&mut tag, at + ciphertext.len() as u64).map_err(file_error("reading", &path()))?;
        Ok(Some(SliceSeal { nonce, tag }))
    }

    /// Forget a slice but leave its bytes where they are (a damaged one,
    /// kept for an operator to look at); its location, if it was stored.
    pub fn set_aside(&self, hash: &Hash) -> StoreResult<Option<[u8; 16]>> // PA
    {
        let Some(location) = self.location(hash)? else { return Ok(None) };
        self.index.remove(hash.as_bytes())?;
        Ok(Some(location.encode()))
    }

    /// Forget a slice and give its disk space back.
    pub fn remove(&self, hash: &Hash) -> StoreResult<()> // PA
    {
        let Some(location) = self.location(hash)? else { return Ok(()) };
        self.index.remove(hash.as_bytes())?;
        let file = self.segment(location.segment)?;
        punch_hole(&file, location.offset, location.len as u64)
            .map_err(file_error("freeing space in", &segment_path(&self.dir, location.segment)))
    }

    /// Live slice bytes and count.
    pub fn usage(&self) -> StoreResult<(u64, usize)> // A
    {
        let mut total = (0u64, 0usize);
        for entry in self.index.iter() {
            let (_, value) = entry?;
            total.0 += Location::decode(&value)?.len as u64;
            total.1 += 1;
        }
        Ok(total)
    }

    /// Bytes the segment files occupy on disk (holes excluded).
    pub fn disk_usage(&self) -> StoreResult<u64> // A
    {
        use std::os::unix::fs::MetadataExt;
        let mut total = 0;
        for entry in fs::read_dir(&self.dir).map_err(file_error("listing", &self.dir))? {
            let meta = entry.and_then(|e| e.metadata()).map_err(file_error("listing", &self.dir))?;
            total += meta.blocks() * 512;
        }
        Ok(total)
    }
}

/// Read exactly `len` bytes at `offset` into a fresh buffer that is never
/// zeroed first: zeroing a megabyte cost as much as the read itself.
fn read_uninit_at(file: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> // PA
{
    let mut buffer: Vec<u8> = Vec::with_capacity(len);
    pread_exact(file, &mut buffer.spare_capacity_mut()[..len], offset)?;
    // SAFETY: pread_exact returned Ok, so it initialised all `len` bytes.
    unsafe { buffer.set_len(len) };
    Ok(buffer)
}

/// Fill all of `dst` from `offset`, or fail.
fn pread_exact(file: &File, dst: &mut [MaybeUninit<u8>], offset: u64) -> std::io::Result<()> // PA
{
    use std::os::fd::AsRawFd;
    let mut filled = 0usize;
    while filled < dst.len() {
        let at = libc::off_t::try_from(offset + filled as u64).map_err(|_| std::io::Error::other("beyond off_t"))?;
        let rest = &mut dst[filled..];
        // SAFETY: the descriptor belongs to `file`, which outlives the call,
        // and pread writes at most `rest.len()` bytes into `rest`, memory we
        // hold exclusively.
        let read = unsafe { libc::pread(file.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match read {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => filled += n as usize,
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn punch_hole(file: &File, offset: u64, len: u64) -> std::io::Result<()> // PA
{
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::other("range beyond off_t"));
    };
    // SAFETY: the descriptor belongs to `file`, which outlives the call;
    // fallocate reads no memory of ours.
    let result = unsafe {
        libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len)
    };
    if result == 0 {
        Ok(())
    } else {
        let error = std::io::Error::last_os_error();
        // Filesystems without hole punching keep the bytes until compaction.
        if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
            Ok(())
        } else {
            Err(error)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn punch_hole(_file: &File, _offset: u64, _len: u64) -> std::io::Result<()> // PA
{
    Ok(())
}
