//! Parsing `--detach-keys`: Docker's spelling of the key sequence that
//! detaches from a container with a TTY.

use std::fmt;

/// The key sequence that detaches from a container with a TTY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachKeys {
    /// As given (Docker's spelling, sent to the daemon too).
    pub spec: String,
    /// The bytes the sequence produces.
    pub bytes: Vec<u8>,
}

impl fmt::Display for DetachKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// Parses Docker's detach key form: comma-separated keys, each a single
/// character or `ctrl-X` with X one of `a-z @ [ \ ] ^ _`.
pub fn parse_detach_keys(s: &str) -> Result<DetachKeys, String> {
    let expected = "expected keys like ctrl-p,ctrl-q: comma-separated, each one character \
                    or ctrl-X with X in a-z, @, [, \\, ], ^, _";
    let mut bytes = Vec::new();
    for key in s.split(',') {
        let b = match key.strip_prefix("ctrl-") {
            Some(x) if x.len() == 1 => {
                let c = x.as_bytes()[0].to_ascii_lowercase();
                match c {
                    b'a'..=b'z' => c - b'a' + 1,
                    b'@' => 0,
                    b'[' | b'\\' | b']' | b'^' | b'_' => c - b'@',
                    _ => return Err(format!("'{key}' in '{s}' is not a key ({expected})")),
                }
            }
            _ if key.len() == 1 && key.is_ascii() => key.as_bytes()[0],
            _ => return Err(format!("'{key}' in '{s}' is not a key ({expected})")),
        };
        bytes.push(b);
    }
    Ok(DetachKeys {
        spec: s.to_owned(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap().bytes, [16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-@,a,ctrl-_").unwrap().bytes,
            [0, b'a', 31]
        );
        for bad in ["", "ctrl-", "ctrl-1", "ab", "ctrl-p,", "é"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad:?}");
        }
    }
}
