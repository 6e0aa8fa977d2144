//! Why bytes from the peer are not a valid frame.

use crate::{codec::CodecError, spec::ReplyCode};

/// A frame the peer sent that cannot be accepted.
///
/// Each error maps to the reply code with which the connection must be closed ([`FrameError::reply_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header declares a frame larger than the negotiated (or pre-tune) maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Whole frame size the header declares (header + payload + end octet).
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// The octet after the payload is not 0xCE.
    #[error("bad frame-end octet {0:#04x}")]
    BadFrameEnd(u8),
    /// A frame type other than method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// spec: "Heartbeat frames MUST have a channel number of zero."
    #[error("heartbeat frame on channel {0}")]
    HeartbeatOnChannel(u16),
    /// A frame too short to hold what its type requires (e.g. a method frame without ids).
    #[error("{0} frame payload too short")]
    TooShort(&'static str),
    /// The peer answered with a protocol header: it does not speak this protocol version.
    #[error("peer does not speak AMQP 0-9-1; it offered protocol header {0:?}")]
    ProtocolMismatch([u8; 8]),
    /// A method frame whose arguments do not decode.
    #[error("bad method frame: {0}")]
    Method(CodecError),
    /// A content header whose fields do not decode.
    #[error("bad content header: {0}")]
    Header(CodecError),
}

impl FrameError {
    /// The reply code to close the connection with.
    ///
    /// Frame structure errors are 501 (frame-error); undecodable arguments are 502 (syntax-error); an
    /// unknown class or method is 503 (command-invalid).
    pub fn reply_code(&self) -> ReplyCode {
        match self {
            FrameError::Method(CodecError::UnknownMethod { .. }) => ReplyCode::COMMAND_INVALID,
            FrameError::Method(_) | FrameError::Header(_) => ReplyCode::SYNTAX_ERROR,
            _ => ReplyCode::FRAME_ERROR,
        }
    }

    /// Whether the frame's extent was sound although its content was not: its header's size led to a
    /// frame-end octet, so the bytes after it start the next frame. After any other error the stream has
    /// no known frame boundary (a size past the limit, an unknown type, a misplaced end octet or a
    /// protocol header), and what follows cannot be decoded as frames.
    pub fn keeps_frame_boundary(&self) -> bool {
        matches!(
            self,
            FrameError::HeartbeatOnChannel(_)
                | FrameError::TooShort(_)
                | FrameError::Method(_)
                | FrameError::Header(_)
        )
    }
}
