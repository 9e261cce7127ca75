//! Writing results to standard output.

use std::io::Write;

/// Writes `text` to standard output. A closed pipe (`kubeci schema | head`) is not an
/// error: the reader has what it wanted.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
