//! A virtual ISO 7816-4 smart card for vsmartcard's `vpcd` reader driver.
//!
//! pcscd loads `vpcd` as a reader driver; `vpcd` listens on a TCP port and a card "is
//! inserted" when a program connects to it. The protocol on that connection is small: every
//! message is a two-byte big-endian length and that many bytes. A one-byte message from the
//! reader is a control code (0 power off, 1 power on, 2 reset, 4 "send your ATR", which is
//! also how pcscd polls for presence); anything longer is a command APDU, answered with a
//! response APDU. The card is removed by closing the connection.
//!
//! [`CardImage`] is the card's file system (a tree of DFs and transparent EFs); a
//! [`VirtualCard`] serves one image on one connection, on a thread of its own, and can be
//! pulled at any moment: at once ([`VirtualCard::remove`]), at pcscd's next presence poll
//! ([`VirtualCard::remove_at_next_poll`], so the removal is seen at a known instant), or in
//! the middle of a read, when the reader sends its n-th command ([`CardImage::pull_after`],
//! or [`VirtualCard::vanish_after`] for a card already in).
//! It records when the reader first saw it and when it sent its first and last command, so
//! benchmarks can tell the card's own read time from the reader's polling.
//!
//! The card implements SELECT (by file id, by path, by DF name, parent), READ BINARY and
//! nothing else: every write and every cryptographic command is refused with a status word,
//! as a card without write access or keys that can be used would.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

/// Status words the card answers with.
mod sw {
    pub(super) const OK: [u8; 2] = [0x90, 0x00];
    pub(super) const WRONG_LENGTH: [u8; 2] = [0x67, 0x00];
    pub(super) const SECURITY_NOT_SATISFIED: [u8; 2] = [0x69, 0x82];
    pub(super) const INCOMPATIBLE_FILE: [u8; 2] = [0x69, 0x81];
    pub(super) const NO_CURRENT_EF: [u8; 2] = [0x69, 0x86];
    pub(super) const FUNCTION_NOT_SUPPORTED: [u8; 2] = [0x6A, 0x81];
    pub(super) const FILE_NOT_FOUND: [u8; 2] = [0x6A, 0x82];
    pub(super) const WRONG_P1P2: [u8; 2] = [0x6A, 0x86];
    pub(super) const REFERENCE_NOT_FOUND: [u8; 2] = [0x6A, 0x88];
    pub(super) const OFFSET_OUTSIDE: [u8; 2] = [0x6B, 0x00];
    pub(super) const INS_NOT_SUPPORTED: [u8; 2] = [0x6D, 0x00];
    pub(super) const CLA_NOT_SUPPORTED: [u8; 2] = [0x6E, 0x00];
}

/// The file id of the master file.
pub const MF: u16 = 0x3F00;

#[derive(Debug, Clone)]
enum Body {
    Df { name: Option<Vec<u8>> },
    Ef(Vec<u8>),
}

#[derive(Debug, Clone)]
struct File {
    /// Absolute path from the MF, the MF's id first.
    path: Vec<u16>,
    body: Body,
}

/// A card's contents: its ATR and file system.
#[derive(Debug, Clone)]
pub struct CardImage {
    atr: Vec<u8>,
    files: Vec<File>,
    pull_after: Option<u64>,
}

impl CardImage {
    /// An empty card (just the MF) whose ATR carries `historical` bytes (at most 15).
    pub fn new(historical: &[u8]) -> Self {
        Self {
            atr: atr(historical),
            files: vec![File {
                path: vec![MF],
                body: Body::Df { name: None },
            }],
            pull_after: None,
        }
    }

    /// Adds a DF at `path` (absolute, starting with [`MF`]), optionally with a DF name (AID).
    pub fn df(mut self, path: &[u16], name: Option<&[u8]>) -> Self {
        self.files.push(File {
            path: path.to_vec(),
            body: Body::Df {
                name: name.map(<[u8]>::to_vec),
            },
        });
        self
    }

    /// Adds a transparent EF at `path` (absolute, starting with [`MF`]).
    pub fn ef(mut self, path: &[u16], contents: Vec<u8>) -> Self {
        self.files.push(File {
            path: path.to_vec(),
            body: Body::Ef(contents),
        });
        self
    }

    /// The card is pulled out when the reader sends its `n`-th command APDU (counted from
    /// insertion; that command gets no answer).
    pub fn pull_after(mut self, n: u64) -> Self {
        self.pull_after = Some(n);
        self
    }

    /// The ATR.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn find(&self, path: &[u16]) -> Option<usize> {
        self.files.iter().position(|f| f.path == path)
    }
}

/// An ATR for T=1 with the given historical bytes: TS, T0, TD1 (T=0 follows), TD2 (T=1),
/// the historical bytes and the check byte.
fn atr(historical: &[u8]) -> Vec<u8> {
    let historical = &historical[..historical.len().min(15)];
    let mut atr = vec![0x3B, 0x80 | historical.len() as u8, 0x80, 0x01];
    atr.extend_from_slice(historical);
    let tck = atr[1..].iter().fold(0u8, |x, b| x ^ b);
    atr.push(tck);
    atr
}

/// What the card's selection points at, and the APDU logic over an image.
struct Card<'a> {
    image: &'a CardImage,
    /// Index of the current DF.
    df: usize,
    /// Index of the current EF.
    ef: Option<usize>,
}

impl<'a> Card<'a> {
    fn new(image: &'a CardImage) -> Self {
        Self {
            image,
            df: 0,
            ef: None,
        }
    }

    fn reset(&mut self) {
        self.df = 0;
        self.ef = None;
    }

    /// Answers one command APDU.
    fn process(&mut self, apdu: &[u8]) -> Vec<u8> {
        let Some(command) = Command::parse(apdu) else {
            return sw::WRONG_LENGTH.to_vec();
        };
        if command.cla & 0xF0 != 0x00 {
            return sw::CLA_NOT_SUPPORTED.to_vec();
        }
        match command.ins {
            0xA4 => self.select(&command),
            0xB0 => self.read_binary(&command),
            // READ RECORD: every EF here is transparent.
            0xB2 => sw::INCOMPATIBLE_FILE.to_vec(),
            // VERIFY, CHANGE/RESET RETRY COUNTER: the card has no PIN.
            0x20 | 0x24 | 0x2C => sw::REFERENCE_NOT_FOUND.to_vec(),
            // Writes, creates, deletes, key generation, MSE/PSO: the card is read-only and
            // has no usable keys.
            0xD6 | 0xD0 | 0xDC | 0xE2 | 0x0E | 0xE0 | 0xE4 | 0x44 | 0x04 | 0x46 | 0x47 | 0x22
            | 0x2A | 0x88 => sw::SECURITY_NOT_SATISFIED.to_vec(),
            _ => sw::INS_NOT_SUPPORTED.to_vec(),
        }
    }

    fn path(&self, i: usize) -> &[u16] {
        &self.image.files[i].path
    }

    fn child(&self, parent: &[u16], fid: u16) -> Option<usize> {
        let mut path = parent.to_vec();
        path.push(fid);
        self.image.find(&path)
    }

    fn select(&mut self, c: &Command<'_>) -> Vec<u8> {
        let fid = |d: &[u8]| (d.len() == 2).then(|| u16::from_be_bytes([d[0], d[1]]));
        let current = self.path(self.df).to_vec();
        let found = match c.p1 {
            // by file id: the MF, a child of the current DF, the current DF's parent
            0x00..=0x02 => match fid(c.data) {
                Some(MF) => Some(0),
                Some(id) => self.child(&current, id).or_else(|| {
                    current
                        .len()
                        .checked_sub(1)
                        .and_then(|n| self.child(&current[..n], id))
                }),
                None if c.data.is_empty() && c.p1 == 0 => Some(0),
                None => return sw::WRONG_LENGTH.to_vec(),
            },
            0x03 => {
                let parent = &current[..current.len().saturating_sub(1).max(1)];
                self.image.find(parent)
            }
            0x04 => self
                .image
                .files
                .iter()
                .position(|f| matches!(&f.body, Body::Df { name: Some(n) } if n == c.data)),
            0x08 | 0x09 => {
                if !c.data.len().is_multiple_of(2) || c.data.is_empty() {
                    return sw::WRONG_LENGTH.to_vec();
                }
                let mut path = if c.p1 == 0x08 { vec![MF] } else { current };
                path.extend(
                    c.data
                        .chunks(2)
                        .map(|p| u16::from_be_bytes([p[0], p[1]]))
                        .skip_while(|&id| c.p1 == 0x08 && id == MF),
                );
                self.image.find(&path)
            }
            _ => return sw::WRONG_P1P2.to_vec(),
        };
        let Some(i) = found else {
            return sw::FILE_NOT_FOUND.to_vec();
        };
        match &self.image.files[i].body {
            Body::Df { .. } => {
                self.df = i;
                self.ef = None;
            }
            Body::Ef(_) => {
                let path = self.path(i);
                self.df = self.image.find(&path[..path.len() - 1]).unwrap_or(0);
                self.ef = Some(i);
            }
        }
        if c.p2 & 0x0C == 0x0C {
            return sw::OK.to_vec();
        }
        let mut out = self.fcp(i);
        out.extend_from_slice(&sw::OK);
        out
    }

    /// The file control parameters (tag 62) of file `i`.
    fn fcp(&self, i: usize) -> Vec<u8> {
        let file = &self.image.files[i];
        let fid = file.path.last().copied().unwrap_or(MF).to_be_bytes();
        let mut body = Vec::new();
        match &file.body {
            Body::Ef(data) => {
                let size = u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes();
                body.extend_from_slice(&[0x80, 0x02, size[0], size[1]]);
                body.extend_from_slice(&[0x82, 0x01, 0x01]);
                body.extend_from_slice(&[0x83, 0x02, fid[0], fid[1]]);
            }
            Body::Df { name } => {
                body.extend_from_slice(&[0x82, 0x01, 0x38]);
                body.extend_from_slice(&[0x83, 0x02, fid[0], fid[1]]);
                if let Some(name) = name {
                    body.extend_from_slice(&[0x84, name.len() as u8]);
                    body.extend_from_slice(name);
                }
            }
        }
        // life cycle: operational, activated
        body.extend_from_slice(&[0x8A, 0x01, 0x05]);
        let mut out = vec![0x62, body.len() as u8];
        out.extend(body);
        out
    }

    fn read_binary(&mut self, c: &Command<'_>) -> Vec<u8> {
        if c.p1 & 0x80 != 0 {
            return sw::FUNCTION_NOT_SUPPORTED.to_vec();
        }
        let Some(i) = self.ef else {
            return sw::NO_CURRENT_EF.to_vec();
        };
        let Body::Ef(data) = &self.image.files[i].body else {
            return sw::NO_CURRENT_EF.to_vec();
        };
        let offset = usize::from(u16::from_be_bytes([c.p1, c.p2]));
        if offset > data.len() {
            return sw::OFFSET_OUTSIDE.to_vec();
        }
        let end = data.len().min(offset + c.le);
        let mut out = data[offset..end].to_vec();
        out.extend_from_slice(&sw::OK);
        out
    }
}

/// A parsed command APDU (short or extended length).
struct Command<'a> {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    /// Expected response length (0 when none is expected).
    le: usize,
}

impl<'a> Command<'a> {
    fn parse(apdu: &'a [u8]) -> Option<Self> {
        let (header, body) = apdu.split_at_checked(4)?;
        let (data, le) = match body {
            [] => (&body[..0], 0),
            [le] => (&body[..0], if *le == 0 { 256 } else { usize::from(*le) }),
            [0, hi, lo] => (&body[..0], extended(*hi, *lo)),
            [0, hi, lo, rest @ ..] => {
                let lc = usize::from(u16::from_be_bytes([*hi, *lo]));
                match rest.len().checked_sub(lc)? {
                    0 => (&rest[..lc], 0),
                    2 => (&rest[..lc], extended(rest[lc], rest[lc + 1])),
                    _ => return None,
                }
            }
            [lc, rest @ ..] => {
                let lc = usize::from(*lc);
                match rest.len().checked_sub(lc)? {
                    0 => (&rest[..lc], 0),
                    1 => (
                        &rest[..lc],
                        if rest[lc] == 0 {
                            256
                        } else {
                            usize::from(rest[lc])
                        },
                    ),
                    _ => return None,
                }
            }
        };
        Some(Self {
            cla: header[0],
            ins: header[1],
            p1: header[2],
            p2: header[3],
            data,
            le,
        })
    }
}

fn extended(hi: u8, lo: u8) -> usize {
    match u16::from_be_bytes([hi, lo]) {
        0 => 65536,
        n => usize::from(n),
    }
}

/// When things happened to one inserted card (wall-clock time, comparable with log lines).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The reader first asked for the ATR: pcscd has noticed the card.
    pub detected: Option<SystemTime>,
    /// The reader first powered the card up (after noticing it; then clients can use it).
    pub powered: Option<SystemTime>,
    /// Command APDUs answered so far.
    pub commands: u64,
    /// The first command APDU.
    pub first_command: Option<SystemTime>,
    /// The last command APDU answered.
    pub last_command: Option<SystemTime>,
    /// The card was pulled (connection closed by the card).
    pub pulled: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct Shared {
    timeline: Timeline,
    pull_at_poll: bool,
    /// The card is pulled when the reader sends this command (counted from insertion).
    pull_at_command: Option<u64>,
}

/// One card inserted into a vpcd reader; removed when dropped.
#[derive(Debug)]
pub struct VirtualCard {
    stream: TcpStream,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl VirtualCard {
    /// Inserts `image` into the vpcd reader listening on `127.0.0.1:port`.
    pub fn insert(port: u16, image: CardImage) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connecting to the vpcd reader on 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        let shared = Arc::new(Mutex::new(Shared {
            pull_at_command: image.pull_after,
            ..Shared::default()
        }));
        let (reader, state) = (stream.try_clone()?, Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name(format!("virtual-card-{port}"))
            .spawn(move || serve(reader, &image, &state))
            .context("starting the virtual card's thread")?;
        Ok(Self {
            stream,
            shared,
            thread: Some(thread),
        })
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What happened to the card so far.
    pub fn timeline(&self) -> Timeline {
        self.shared().timeline.clone()
    }

    /// Waits until the reader has noticed the card (asked for its ATR) and powered it up,
    /// so that PC/SC clients can use it; returns when it was noticed.
    pub fn wait_detected(&self, within: Duration) -> anyhow::Result<SystemTime> {
        let until = std::time::Instant::now() + within;
        loop {
            let t = self.timeline();
            if let (Some(detected), Some(_)) = (t.detected, t.powered) {
                return Ok(detected);
            }
            anyhow::ensure!(
                std::time::Instant::now() < until,
                "the reader did not notice the card within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Forgets the commands counted so far (to time one read of a card left in).
    pub fn restart_timeline(&self) {
        let mut s = self.shared();
        s.timeline.commands = 0;
        s.timeline.first_command = None;
        s.timeline.last_command = None;
    }

    /// The card answers `n` more command APDUs and vanishes at the next one (which gets no
    /// answer): a card pulled in the middle of whatever the reader is doing with it.
    pub fn vanish_after(&self, n: u64) {
        let mut s = self.shared();
        s.pull_at_command = Some(s.timeline.commands + n + 1);
    }

    /// Waits until the card has vanished by [`Self::vanish_after`] (its connection closed at
    /// the reader's command); returns its timeline. Errs when the reader sent fewer commands
    /// within `within`.
    pub fn wait_vanished(&self, within: Duration) -> anyhow::Result<Timeline> {
        let until = std::time::Instant::now() + within;
        loop {
            let t = self.timeline();
            if t.pulled.is_some() {
                return Ok(t);
            }
            anyhow::ensure!(
                std::time::Instant::now() < until,
                "the card did not vanish within {within:?} ({} commands answered)",
                t.commands
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Pulls the card out now.
    pub fn remove(mut self) -> Timeline {
        self.close();
        self.timeline()
    }

    /// Pulls the card out when pcscd next polls for it, so the removal is seen at that
    /// instant ([`Timeline::pulled`]); waits for that.
    pub fn remove_at_next_poll(mut self, within: Duration) -> anyhow::Result<Timeline> {
        self.shared().pull_at_poll = true;
        let until = std::time::Instant::now() + within;
        while self.timeline().pulled.is_none() {
            anyhow::ensure!(
                std::time::Instant::now() < until,
                "pcscd did not poll the card within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        self.close();
        Ok(self.timeline())
    }

    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let mut shared = self.shared();
        if shared.timeline.pulled.is_none() {
            shared.timeline.pulled = Some(SystemTime::now());
        }
    }
}

impl Drop for VirtualCard {
    fn drop(&mut self) {
        self.close();
    }
}

/// Acknowledges what arrives at once. vpcd sends a message's length and its body in two
/// writes without TCP_NODELAY, so its body waits (Nagle) until the length is acknowledged;
/// with the usual delayed acknowledgement every command would take 40 ms longer.
fn quick_ack(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

/// The card's side of the connection: answers until the reader or the card closes it.
fn serve(mut stream: TcpStream, image: &CardImage, shared: &Mutex<Shared>) {
    let lock = || shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut card = Card::new(image);
    let mut message = Vec::new();
    loop {
        let mut len = [0u8; 2];
        quick_ack(&stream);
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        message.resize(usize::from(u16::from_be_bytes(len)), 0);
        quick_ack(&stream);
        if stream.read_exact(&mut message).is_err() {
            return;
        }
        let now = SystemTime::now();
        let reply = if let [control] = message[..] {
            match control {
                // power off, power on, reset: no answer
                0..=2 => {
                    if control == 1 {
                        lock().timeline.powered.get_or_insert(now);
                    }
                    card.reset();
                    continue;
                }
                4 => {
                    let mut s = lock();
                    if s.pull_at_poll {
                        s.timeline.pulled = Some(now);
                        drop(s);
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                    s.timeline.detected.get_or_insert(now);
                    image.atr.clone()
                }
                _ => continue,
            }
        } else {
            let mut s = lock();
            let n = s.timeline.commands + 1;
            if s.pull_at_command == Some(n) {
                s.timeline.pulled = Some(now);
                drop(s);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            drop(s);
            let reply = card.process(&message);
            let mut s = lock();
            s.timeline.commands = n;
            s.timeline.first_command.get_or_insert(now);
            s.timeline.last_command = Some(SystemTime::now());
            reply
        };
        let mut out = u16::try_from(reply.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(&reply);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> CardImage {
        CardImage::new(b"test")
            .df(&[MF, 0x5015], Some(b"\xA0\x00\x00\x00\x63PKCS-15"))
            .ef(&[MF, 0x2F00], b"dir".to_vec())
            .ef(
                &[MF, 0x5015, 0x4401],
                (0..=255u8).cycle().take(600).collect(),
            )
    }

    #[test]
    fn atr_has_a_valid_check_byte() {
        let atr = atr(b"custody");
        assert_eq!(&atr[..4], &[0x3B, 0x87, 0x80, 0x01]);
        assert_eq!(atr[1..].iter().fold(0, |x, b| x ^ b), 0);
    }

    #[test]
    fn select_by_path_and_read_in_chunks() {
        let image = image();
        let mut card = Card::new(&image);
        let r = card.process(&[0x00, 0xA4, 0x08, 0x00, 0x04, 0x50, 0x15, 0x44, 0x01, 0x00]);
        assert_eq!(&r[..2], &[0x62, r[1]]);
        assert_eq!(&r[2..6], &[0x80, 0x02, 0x02, 0x58], "size 600");
        assert_eq!(&r[r.len() - 2..], &sw::OK);
        let r = card.process(&[0x00, 0xB0, 0x02, 0x00, 0x00]);
        assert_eq!(r.len(), 88 + 2, "the last 88 bytes from offset 512");
        assert_eq!(r[0], 0);
        let r = card.process(&[0x00, 0xB0, 0x03, 0x00, 0x10]);
        assert_eq!(r, sw::OFFSET_OUTSIDE);
    }

    #[test]
    fn select_by_name_by_id_and_unknown_files() {
        let image = image();
        let mut card = Card::new(&image);
        let mut apdu = vec![0x00, 0xA4, 0x04, 0x00, 12];
        apdu.extend_from_slice(b"\xA0\x00\x00\x00\x63PKCS-15");
        let r = card.process(&apdu);
        assert_eq!(&r[r.len() - 2..], &sw::OK);
        let r = card.process(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x44, 0x01]);
        assert_eq!(r, sw::OK, "a child of the selected DF");
        let r = card.process(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0x00]);
        assert_eq!(r, sw::OK, "a child of the parent of the EF's DF");
        let r = card.process(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x12, 0x34]);
        assert_eq!(r, sw::FILE_NOT_FOUND);
        let r = card.process(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]);
        assert_eq!(r, sw::OK);
        let r = card.process(&[0x00, 0xA4, 0x04, 0x00, 0x03, 1, 2, 3, 0x00]);
        assert_eq!(r, sw::FILE_NOT_FOUND);
    }

    #[test]
    fn writes_and_crypto_are_refused() {
        let image = image();
        let mut card = Card::new(&image);
        assert_eq!(
            card.process(&[0x00, 0xD6, 0x00, 0x00, 0x01, 0xFF]),
            sw::SECURITY_NOT_SATISFIED
        );
        assert_eq!(
            card.process(&[0x00, 0x2A, 0x9E, 0x9A, 0x01, 0xFF, 0x00]),
            sw::SECURITY_NOT_SATISFIED
        );
        assert_eq!(
            card.process(&[0x00, 0x20, 0x00, 0x81]),
            sw::REFERENCE_NOT_FOUND
        );
        assert_eq!(
            card.process(&[0x00, 0xCA, 0x00, 0x00]),
            sw::INS_NOT_SUPPORTED
        );
        assert_eq!(card.process(&[0x00, 0xB0]), sw::WRONG_LENGTH);
    }
}
