/// Eight bytes read as one word (SWAR): whether any of them is below a bound or equal to a
/// value, exactly (a borrow can start only at a byte that qualifies, so none is missed). For
/// scans that skip plain text a word at a time: HTTP field values, JSON strings.
public enum Word {
    @usableFromInline static let ones: UInt64 = 0x0101_0101_0101_0101
    @usableFromInline static let highs: UInt64 = 0x8080_8080_8080_8080

    /// True when a byte of `w` is below `bound` (at most 0x80).
    @inlinable @inline(__always)
    public static func hasByte(_ w: UInt64, below bound: UInt8) -> Bool {
        (w &- ones &* UInt64(bound)) & ~w & highs != 0
    }

    /// True when a byte of `w` equals `b`.
    @inlinable @inline(__always)
    public static func hasByte(_ w: UInt64, equalTo b: UInt8) -> Bool {
        let x = w ^ (ones &* UInt64(b))
        return (x &- ones) & ~x & highs != 0
    }
}
