//! Splitting a batch's lines into runs of bounded size, so that no single database statement
//! carries a whole batch.
//!
//! The PostgreSQL client encodes each statement's parameters into one buffer and copies it into
//! its socket's write buffer; both keep their largest size for the life of the connection. One
//! 195 MB batch sent as one statement left a pooled connection holding about twice that, for
//! good (see [`STATEMENT_BYTES`]).

use super::IncomingLine;

/// The most line text (plus [`LINE_OVERHEAD`] per line) one statement carries. Large enough that
/// a statement's round trip is noise beside its work (a 4 MiB insert takes tens of
/// milliseconds), small enough that the buffers every pooled connection keeps stay small.
pub const STATEMENT_BYTES: usize = 4 * 1024 * 1024;

/// What a line costs in a statement besides its text: its number, id and array lengths on the
/// way in, its number on the way back (`RETURNING n`).
pub const LINE_OVERHEAD: usize = 64;

/// What `line` weighs in a statement.
pub fn weight(line: &IncomingLine) -> usize {
    line.text.len() + LINE_OVERHEAD
}

/// Consecutive runs of `lines`, in order, each weighing at most `bound` (see [`weight`]), except
/// a run of one line that alone weighs more. Together they are exactly `lines`.
pub fn runs(lines: &[IncomingLine], bound: usize) -> impl Iterator<Item = &[IncomingLine]> {
    let mut rest = lines;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut total = 0;
        let taken = rest
            .iter()
            .take_while(|l| {
                total += weight(l);
                total <= bound
            })
            .count()
            .max(1);
        let (run, tail) = rest.split_at(taken);
        rest = tail;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(sizes: &[usize]) -> Vec<IncomingLine> {
        sizes
            .iter()
            .enumerate()
            .map(|(n, size)| IncomingLine {
                number: n as u64,
                id: uuid::Uuid::nil(),
                text: "x".repeat(*size),
            })
            .collect()
    }

    #[track_caller]
    fn run_sizes(sizes: &[usize], bound: usize) -> Vec<Vec<usize>> {
        let input = lines(sizes);
        let runs: Vec<&[IncomingLine]> = runs(&input, bound).collect();
        let joined: Vec<&IncomingLine> = runs.iter().flat_map(|r| r.iter()).collect();
        assert_eq!(
            joined,
            input.iter().collect::<Vec<_>>(),
            "every line once, in order"
        );
        runs.iter()
            .map(|r| r.iter().map(|l| l.text.len()).collect())
            .collect()
    }

    #[test]
    fn runs_stay_within_the_bound_and_keep_every_line_once_in_order() {
        let o = LINE_OVERHEAD;
        assert!(run_sizes(&[], 100).is_empty());
        // Exactly at the bound fits; one byte more starts the next run.
        assert_eq!(
            run_sizes(&[10, 10, 10], 2 * (10 + o)),
            vec![vec![10, 10], vec![10]]
        );
        assert_eq!(
            run_sizes(&[10, 11, 10], 2 * (10 + o)),
            vec![vec![10], vec![11], vec![10]]
        );
        // A line heavier than the bound goes alone, and the lines after it go on.
        assert_eq!(
            run_sizes(&[1, 1000, 1, 1], 3 * (1 + o)),
            vec![vec![1], vec![1000], vec![1, 1]]
        );
        let many = vec![100; 1000];
        for r in run_sizes(&many, 10 * (100 + o)) {
            assert_eq!(r.len(), 10);
        }
    }
}
