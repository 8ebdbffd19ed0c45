//! A body gathered whole as it arrives, holding no more than it says it holds.

use bytes::{Bytes, BytesMut};

/// A body's pieces gathered into one buffer. Each piece a connection hands over is a slice of
/// its read buffer, and holding a piece holds that whole buffer: a peer that sends its body a byte
/// at a time would make a list of pieces hold kilobytes per byte. So only the first piece is kept
/// as it is (a body that comes in one piece is not copied); from the second on, the pieces are
/// copied into one buffer and released at once. Never sized by what the peer announces.
#[derive(Debug, Default)]
pub struct Collected {
    first: Option<Bytes>,
    rest: BytesMut,
    len: usize,
}

impl Collected {
    /// Adds the next piece.
    pub fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(piece);
            return;
        }
        if let Some(first) = self.first.take() {
            self.rest.reserve(first.len() + piece.len());
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&piece);
    }

    /// Bytes gathered so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was gathered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole body, in a buffer of about its size (growing by doubling left up to as much
    /// again unused; that is given back).
    pub fn join(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None if self.rest.capacity() - self.rest.len() > self.rest.len() / 4 => Bytes::copy_from_slice(&self.rest),
            None => self.rest.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_joined_and_none_is_held_past_its_turn() {
        let mut one = Collected::default();
        let buffer = Bytes::from(vec![b'a'; 8192]);
        one.push(buffer.slice(0..3));
        let joined = one.join();
        assert_eq!(&joined[..], b"aaa");
        // A single piece is not copied: it is the same memory.
        assert_eq!(joined.as_ptr(), buffer.as_ptr());

        let mut many = Collected::default();
        let buffers: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; 8192])).collect();
        for (i, b) in buffers.iter().enumerate() {
            many.push(b.slice(0..1));
            assert_eq!(many.len(), i + 1);
        }
        // Every piece was copied: each 8 KiB buffer is held by nothing but its own handle.
        let buffers: Vec<Vec<u8>> = buffers
            .into_iter()
            .map(|b| b.try_into_mut().expect("not held").to_vec())
            .collect();
        assert_eq!(buffers.len(), 100);
        let joined = many.join();
        assert_eq!(joined.len(), 100);
        assert_eq!(joined[99], 99);
        assert!(Collected::default().is_empty());
    }
}
