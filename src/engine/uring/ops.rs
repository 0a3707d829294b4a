//! What each io_uring completion is for: its user data, written and read here only.

use io_uring::{opcode, squeue};

/// The buffer group of the stream receive buffers, and of the sequenced-packet ones (larger:
/// a record is received whole).
pub(super) const STREAM_GROUP: u16 = 0;
pub(super) const PACKET_GROUP: u16 = 1;

/// What a completion is for: the top byte of its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
    /// An accept on the acceptor of this index.
    Accept = 1,
    /// A stream connection's receive, multishot or one-shot (stream buffer group).
    Recv,
    /// A sequenced-packet connection's receive, multishot or one-shot (packet buffer group).
    RecvPacket,
    /// A connection's send.
    Send,
    /// A cancellation (the cancelled operation reports itself).
    Cancel,
    /// The poll on the stop trigger.
    Stop,
    /// The poll on the end of the grace period.
    Force,
    /// The poll on the thread's wake-up socket.
    Wake,
    /// The poll on the datagram listener of this index.
    Datagram,
}

impl Op {
    const ALL: [Op; 9] = [
        Op::Accept,
        Op::Recv,
        Op::RecvPacket,
        Op::Send,
        Op::Cancel,
        Op::Stop,
        Op::Force,
        Op::Wake,
        Op::Datagram,
    ];
}

/// User data: the operation, a generation (for connections: a slot reused since completes
/// nothing of the old one; 24 bits), an index.
pub(super) fn user_data(op: Op, index: usize, generation: u32) -> u64 {
    (op as u64) << 56 | u64::from(generation & 0xff_ffff) << 32 | (index as u64 & 0xffff_ffff)
}

/// The operation, index and generation of a completion's user data.
pub(super) fn decode(data: u64) -> (Option<Op>, usize, u32) {
    let op = Op::ALL.into_iter().find(|op| *op as u64 == data >> 56);
    let index = (data & 0xffff_ffff) as usize;
    (op, index, ((data >> 32) & 0xff_ffff) as u32)
}

/// Cancels the operation of this user data.
pub(super) fn cancel(target: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(target)
        .build()
        .user_data(user_data(Op::Cancel, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in Op::ALL {
            let data = user_data(op, 123_456, 0x1ff_ffff);
            assert_eq!(decode(data), (Some(op), 123_456, 0xff_ffff));
        }
        assert_eq!(decode(0).0, None);
    }
}
