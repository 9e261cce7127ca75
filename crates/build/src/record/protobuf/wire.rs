//! Protocol Buffers' wire format, as much of it as Kubernetes' messages use: varints and
//! length-delimited fields read in place (a field kubeci does not read costs a skip, no
//! allocation), and written back for the fake API server and tests.

use super::ProtobufError;

/// A field's value as it lies on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed 32- or 64-bit value: no message kubeci reads has one.
    Fixed,
}

impl<'a> Value<'a> {
    /// The bytes of a length-delimited field (a string, bytes, a message, a map entry).
    pub(crate) fn bytes(
        self,
        message: &'static str,
        field: u32,
    ) -> Result<&'a [u8], ProtobufError> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            _ => Err(ProtobufError::WrongWireType { message, field }),
        }
    }

    pub(crate) fn string(
        self,
        message: &'static str,
        field: u32,
    ) -> Result<&'a str, ProtobufError> {
        std::str::from_utf8(self.bytes(message, field)?)
            .map_err(|_| ProtobufError::NotUtf8 { message, field })
    }

    pub(crate) fn varint(self, message: &'static str, field: u32) -> Result<u64, ProtobufError> {
        match self {
            Value::Varint(value) => Ok(value),
            _ => Err(ProtobufError::WrongWireType { message, field }),
        }
    }
}

/// The fields of one message, in order.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    message: &'static str,
}

/// The fields of `buf`, a message of type `message` (named in errors).
pub(crate) fn fields<'a>(buf: &'a [u8], message: &'static str) -> Fields<'a> {
    Fields { buf, message }
}

impl<'a> Fields<'a> {
    fn truncated(&mut self) -> ProtobufError {
        self.buf = &[];
        ProtobufError::Truncated {
            message: self.message,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for (i, byte) in self.buf.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(self.truncated())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtobufError> {
        if self.buf.len() < len {
            return Err(self.truncated());
        }
        let (taken, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), ProtobufError> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).unwrap_or(u32::MAX);
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Fixed)?,
            2 => {
                let len = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Fixed)?,
            _ => {
                self.buf = &[];
                return Err(ProtobufError::WrongWireType {
                    message: self.message,
                    field,
                });
            }
        };
        Ok((field, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), ProtobufError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            None
        } else {
            Some(self.field())
        }
    }
}

/// Writes a message's fields.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    fn raw_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    pub(crate) fn varint(&mut self, field: u32, value: u64) {
        self.raw_varint(u64::from(field) << 3);
        self.raw_varint(value);
    }

    pub(crate) fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.raw_varint((u64::from(field) << 3) | 2);
        self.raw_varint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn string(&mut self, field: u32, value: &str) {
        self.bytes(field, value.as_bytes());
    }

    /// A nested message, written by `write`.
    pub(crate) fn message(&mut self, field: u32, write: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        write(&mut inner);
        self.bytes(field, &inner.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_field_by_field() {
        let mut writer = Writer::default();
        writer.string(1, "job-7");
        writer.varint(7, 300);
        writer.message(8, |w| w.varint(1, 1_700_000_000));
        let read: Vec<_> = fields(&writer.buf, "test")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read[0], (1, Value::Bytes(b"job-7")));
        assert_eq!(read[1], (7, Value::Varint(300)));
        let (8, Value::Bytes(inner)) = read[2] else {
            panic!("a nested message: {read:?}")
        };
        assert_eq!(
            fields(inner, "time").next().unwrap().unwrap(),
            (1, Value::Varint(1_700_000_000))
        );
    }

    #[test]
    fn a_message_cut_short_is_an_error_not_a_panic() {
        let mut writer = Writer::default();
        writer.string(1, "a name that will be cut");
        for end in 0..writer.buf.len() {
            let read: Result<Vec<_>, _> = fields(&writer.buf[..end], "ObjectMeta").collect();
            if end > 0 {
                assert!(
                    matches!(
                        read,
                        Err(ProtobufError::Truncated {
                            message: "ObjectMeta"
                        })
                    ),
                    "cut at {end}: {read:?}"
                );
            }
        }
        // A group (wire type 3), which Kubernetes never sends.
        let read: Result<Vec<_>, _> = fields(&[0x0b], "Job").collect();
        assert!(matches!(
            read,
            Err(ProtobufError::WrongWireType { field: 1, .. })
        ));
    }
}
