//! What a WAL segment's page headers say, checked without a server: the long header of the
//! first page (system identifier, segment size, page size) and, page by page, the magic, the
//! page address the file name implies and the timeline.

use crate::error::Result;

/// XLP_LONG_HEADER: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of XLogLongPageHeaderData (what [`LongHeader::parse`] reads).
pub const LONG_HEADER_LEN: usize = 40;

/// The long page header of a segment's first page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongHeader {
    pub magic: u16,
    pub system_identifier: u64,
    pub seg_size: u64,
    pub page_size: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(x)
}

impl LongHeader {
    /// The long header at the start of `head`, or an error naming `name`.
    pub fn parse(name: &str, head: &[u8]) -> Result<LongHeader> {
        if head.len() < LONG_HEADER_LEN {
            return Err(err!("{} is only {} bytes long: not a WAL segment, or damaged", name, head.len()));
        }
        if u16_at(head, 2) & XLP_LONG_HEADER == 0 {
            return Err(err!("{} does not start with a long page header: not a WAL segment, or damaged", name));
        }
        let h = LongHeader {
            magic: u16_at(head, 0),
            system_identifier: u64_at(head, 24),
            seg_size: u32_at(head, 32) as u64,
            page_size: u32_at(head, 36) as u64,
        };
        let pow2 = |x: u64| x.is_power_of_two();
        if !pow2(h.seg_size) || !pow2(h.page_size) || h.page_size < 1024 || h.seg_size < h.page_size {
            return Err(err!(
                "{}: its header gives segment size {} and page size {}: damaged",
                name,
                h.seg_size,
                h.page_size
            ));
        }
        Ok(h)
    }
}

/// Timeline and segment number from a segment name (`TTTTTTTTXXXXXXXXYYYYYYYY`).
fn tli_and_segno(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    let n = name.get(..24)?;
    let tli = u32::from_str_radix(&n[..8], 16).ok()?;
    let log = u64::from_str_radix(&n[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&n[16..24], 16).ok()?;
    Some((tli, log * (0x1_0000_0000 / seg_size) + seg))
}

/// Checks a whole segment fed in order, chunk by chunk: every page header has the first
/// page's magic, the page address the name implies and a timeline no later than the name's
/// and never going back; the total length is the header's segment size.
pub struct PageCheck {
    name: String,
    head: LongHeader,
    tli: u32,
    start: u64,
    seen: u64,
    last_tli: u32,
    /// A page with a zeroed header was seen: the rest of the segment after a WAL switch
    /// (PostgreSQL 11+ zeroes those headers), where every later header is zero too.
    zero_tail: bool,
    /// The part of a page header split across two chunks.
    carry: Vec<u8>,
}

/// Bytes of a short page header read here: magic, info, tli, pageaddr.
const PAGE_HEADER_READ: usize = 16;

impl PageCheck {
    /// A check of segment `name` whose first bytes are `head` (at least the long header).
    pub fn new(name: &str, head: &[u8]) -> Result<PageCheck> {
        let h = LongHeader::parse(name, head)?;
        let (tli, segno) = tli_and_segno(name, h.seg_size).ok_or_else(|| err!("{} is not a segment name", name))?;
        Ok(PageCheck {
            name: name.into(),
            head: h,
            tli,
            start: segno * h.seg_size,
            seen: 0,
            last_tli: 0,
            zero_tail: false,
            carry: Vec::new(),
        })
    }

    pub fn header(&self) -> LongHeader {
        self.head
    }

    /// Check the page headers that start in `chunk` (the next bytes of the segment).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        let end = self.seen + chunk.len() as u64;
        if end > self.head.seg_size {
            return Err(err!("{} is longer than its header's segment size {}: damaged", self.name, self.head.seg_size));
        }
        let ps = self.head.page_size;
        // A header that began in the previous chunk.
        if !self.carry.is_empty() {
            let need = PAGE_HEADER_READ - self.carry.len();
            let take = need.min(chunk.len());
            self.carry.extend_from_slice(&chunk[..take]);
            if self.carry.len() == PAGE_HEADER_READ {
                let at = self.seen - (self.carry.len() - take) as u64;
                let h = std::mem::take(&mut self.carry);
                self.check_page(at, &h)?;
            }
        }
        let mut page = self.seen.div_ceil(ps) * ps;
        while page < end {
            let off = (page - self.seen) as usize;
            if off + PAGE_HEADER_READ <= chunk.len() {
                self.check_page(page, &chunk[off..off + PAGE_HEADER_READ])?;
            } else {
                self.carry = chunk[off..].to_vec();
            }
            page += ps;
        }
        self.seen = end;
        Ok(())
    }

    /// Check every page header of the plain segment `file` (`len` bytes) by reading only the
    /// headers, one positioned read each, so that the copy itself can stay in the kernel
    /// (copy_file_range) as cp's does; then [`PageCheck::finish`] as after the last chunk.
    pub fn check_file(&mut self, file: &std::fs::File, len: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if len > self.head.seg_size {
            return Err(err!("{} is longer than its header's segment size {}: damaged", self.name, self.head.seg_size));
        }
        let mut h = [0u8; PAGE_HEADER_READ];
        let mut at = 0;
        while at + PAGE_HEADER_READ as u64 <= len {
            file.read_exact_at(&mut h, at)
                .map_err(|e| err!("{}: cannot read the page at offset {}: {}", self.name, at, e))?;
            self.check_page(at, &h)?;
            at += self.head.page_size;
        }
        self.seen = len;
        self.finish()
    }

    /// One page header at offset `at` of the segment.
    fn check_page(&mut self, at: u64, h: &[u8]) -> Result<()> {
        let (magic, tli, addr) = (u16_at(h, 0), u32_at(h, 4), u64_at(h, 8));
        let want = self.start + at;
        let zero = h.iter().all(|&b| b == 0);
        if at > 0 && (zero || self.zero_tail) {
            self.zero_tail = true;
            if !zero {
                return Err(err!(
                    "{}: the page at offset {} has a header after the zeroed pages that end the segment's WAL: damaged",
                    self.name,
                    at
                ));
            }
            return Ok(());
        }
        if magic != self.head.magic || addr != want {
            return Err(err!(
                "{}: the page at offset {} has magic {:04X} and address {:X}, want {:04X} and {:X}: damaged",
                self.name,
                at,
                magic,
                addr,
                self.head.magic,
                want
            ));
        }
        if tli > self.tli || tli < self.last_tli {
            return Err(err!(
                "{}: the page at offset {} names timeline {}: damaged (the file is on timeline {})",
                self.name,
                at,
                tli,
                self.tli
            ));
        }
        self.last_tli = tli;
        Ok(())
    }

    /// After the last chunk: the segment is complete.
    pub fn finish(&self) -> Result<()> {
        if self.seen != self.head.seg_size || !self.carry.is_empty() {
            return Err(err!(
                "{} is {} bytes, its header says {}: truncated or damaged",
                self.name,
                self.seen,
                self.head.seg_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A valid segment `name` of `size` bytes in pages of `ps`, system identifier `sysid`.
    pub fn segment(name: &str, sysid: u64, size: u32, ps: u32) -> Vec<u8> {
        let (tli, segno) = tli_and_segno(name, size as u64).unwrap();
        let mut s = vec![0x5au8; size as usize];
        for p in (0..size).step_by(ps as usize) {
            let at = p as usize;
            s[at..at + 2].copy_from_slice(&0xD110u16.to_ne_bytes());
            s[at + 2..at + 4].copy_from_slice(&(if p == 0 { 6u16 } else { 4u16 }).to_ne_bytes());
            s[at + 4..at + 8].copy_from_slice(&tli.to_ne_bytes());
            s[at + 8..at + 16].copy_from_slice(&(segno * size as u64 + p as u64).to_ne_bytes());
        }
        s[24..32].copy_from_slice(&sysid.to_ne_bytes());
        s[32..36].copy_from_slice(&size.to_ne_bytes());
        s[36..40].copy_from_slice(&ps.to_ne_bytes());
        s
    }

    fn check(name: &str, s: &[u8], chunk: usize) -> Result<()> {
        let mut c = PageCheck::new(name, s)?;
        for part in s.chunks(chunk) {
            c.feed(part)?;
        }
        c.finish()
    }

    #[test]
    fn every_page_header_is_checked_whatever_the_chunks() {
        let n = "000000020000000100000003";
        let s = segment(n, 7, 65536, 8192);
        for chunk in [1, 7, 16, 8192, 10000, 65536] {
            check(n, &s, chunk).unwrap();
        }
        let mut bad = s.clone();
        bad[3 * 8192 + 9] ^= 1; // page address of page 3
        assert!(check(n, &bad, 10000).unwrap_err().msg.contains("offset 24576"));
        let mut bad = s.clone();
        bad[5 * 8192 + 4] = 3; // a later timeline than the name's
        assert!(check(n, &bad, 5000).unwrap_err().msg.contains("timeline 3"));
        let mut bad = s.clone();
        bad[7 * 8192] ^= 0xff; // magic
        assert!(check(n, &bad, 3).is_err());
        assert!(check(n, &s[..65536 - 8192], 8192).unwrap_err().msg.contains("truncated"));
        // The same bytes under another name have the wrong page addresses.
        assert!(check("000000020000000100000004", &s, 8192).is_err());
        // An earlier timeline is fine in the pages before a switch, not after a later one.
        let mut mixed = s.clone();
        mixed[4..8].copy_from_slice(&1u32.to_ne_bytes());
        check(n, &mixed, 8192).unwrap();
        let mut back = s.clone();
        back[2 * 8192 + 4..2 * 8192 + 8].copy_from_slice(&1u32.to_ne_bytes());
        assert!(check(n, &back, 8192).is_err());
        assert!(LongHeader::parse(n, &[0u8; 10]).is_err());
        // After a WAL switch the rest of the pages have zeroed headers, up to the end only.
        let mut switched = s.clone();
        for p in 4..8 {
            switched[p * 8192..p * 8192 + 24].fill(0);
        }
        check(n, &switched, 8192).unwrap();
        switched[6 * 8192..7 * 8192].copy_from_slice(&s[6 * 8192..7 * 8192]);
        assert!(check(n, &switched, 8192).unwrap_err().msg.contains("after the zeroed pages"));
    }
}
