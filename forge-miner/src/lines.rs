//! Byte offset → 1-based line numbers.

/// Start offsets of every line of a text.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr_newlines(text.as_bytes()).map(|i| i + 1));
        Self { starts }
    }

    /// 1-based line of byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// 1-based inclusive line range of the bytes `start..end`.
    pub(crate) fn lines(&self, start: usize, end: usize) -> (usize, usize) {
        let first = self.line(start);
        let last = if end > start {
            self.line(end - 1)
        } else {
            first
        };
        (first, last)
    }
}

fn memchr_newlines(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter_map(|(i, &b)| (b == b'\n').then_some(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_offsets() {
        let ix = LineIndex::new("ab\ncd\n\nef");
        assert_eq!(ix.line(0), 1);
        assert_eq!(ix.line(2), 1);
        assert_eq!(ix.line(3), 2);
        assert_eq!(ix.line(6), 3);
        assert_eq!(ix.line(7), 4);
        assert_eq!(ix.lines(0, 3), (1, 1));
        assert_eq!(ix.lines(0, 4), (1, 2));
    }
}
