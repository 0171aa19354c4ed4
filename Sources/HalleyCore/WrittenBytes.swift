extension Array where Element == UInt8 {
    /// An array of at most `capacity` bytes, written by `write` (which returns how many it
    /// wrote). For the small encodings made per request (a message's prefix, a publish's
    /// answer, a poll's answer): `Array(unsafeUninitializedCapacity:)` and
    /// `Array(repeating:count:)` allocate through the standard library's unspecialized code,
    /// which looks the storage class's generic metadata up on every call (about 400
    /// instructions under callgrind), where an array copied from a buffer is made by code
    /// specialized here. So up to 4 KiB the bytes are written into temporary memory and copied
    /// (a few dozen instructions for a few hundred bytes); past that, the first way. `write`
    /// is not called when `capacity` is 0 (the array is empty).
    @inlinable
    public init(writing capacity: Int, _ write: (UnsafeMutableRawPointer) -> Int) {
        guard capacity > 0 else {
            self = []
            return
        }
        guard capacity <= 4096 else {
            self.init(unsafeUninitializedCapacity: capacity) { b, n in
                n = write(UnsafeMutableRawPointer(b.baseAddress!))
                precondition(n >= 0 && n <= capacity, "wrote \(n) bytes into \(capacity)")
            }
            return
        }
        self = withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 16) { tmp in
            let n = write(tmp.baseAddress!)
            precondition(n >= 0 && n <= capacity, "wrote \(n) bytes into \(capacity)")
            return Array(UnsafeRawBufferPointer(rebasing: tmp[0..<n]))
        }
    }
}
