#if canImport(Glibc)
import Glibc
#endif

/// A growable byte buffer with a read and a write index, for bytes that must outlive one loop
/// turn: a partial request, a blocked write. Connections allocate one only while such bytes
/// exist and drop it when it empties, so an idle connection holds none (docs/ARCHITECTURE.md,
/// "Ownership").
///
/// Not thread-safe: owned by one event loop, like the connection that holds it.
public final class ByteBuffer {
    public private(set) var base: UnsafeMutableRawPointer
    public private(set) var capacity: Int
    public var readerIndex = 0
    public var writerIndex = 0

    public init(capacity: Int = 1024) {
        self.capacity = max(capacity, 16)
        self.base = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    @inlinable public var readableBytes: Int { writerIndex - readerIndex }
    @inlinable public var isEmpty: Bool { writerIndex == readerIndex }

    /// The readable bytes, valid until the next mutation.
    public var readable: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + readerIndex, count: writerIndex - readerIndex)
    }

    public func clear() {
        readerIndex = 0
        writerIndex = 0
    }

    public func moveReader(by n: Int) {
        precondition(n >= 0 && n <= readableBytes, "moveReader past the written bytes")
        readerIndex += n
        if readerIndex == writerIndex { readerIndex = 0; writerIndex = 0 }
    }

    /// Makes room for `n` more bytes, compacting read bytes away before growing.
    public func reserve(_ n: Int) {
        if capacity - writerIndex >= n { return }
        if readerIndex > 0 {
            let live = readableBytes
            if live > 0 { (base).copyMemory(from: base + readerIndex, byteCount: live) }
            readerIndex = 0
            writerIndex = live
            if capacity - writerIndex >= n { return }
        }
        var newCapacity = capacity
        while newCapacity - writerIndex < n { newCapacity *= 2 }
        let newBase = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        if writerIndex > 0 { newBase.copyMemory(from: base, byteCount: writerIndex) }
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }

    /// Free space after the write index; call `didWrite` with what was filled in.
    public var writable: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + writerIndex, count: capacity - writerIndex)
    }

    public func didWrite(_ n: Int) {
        precondition(n >= 0 && writerIndex + n <= capacity)
        writerIndex += n
    }

    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count)
        (base + writerIndex).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        writerIndex += bytes.count
    }

    public func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    public func append(_ string: StaticString) {
        append(UnsafeRawBufferPointer(start: string.utf8Start, count: string.utf8CodeUnitCount))
    }

    public func append(_ string: String) {
        var s = string
        s.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    public func append(byte: UInt8) {
        reserve(1)
        base.storeBytes(of: byte, toByteOffset: writerIndex, as: UInt8.self)
        writerIndex += 1
    }

    /// Appends `value` in decimal without allocating.
    public func append(decimal value: Int) {
        precondition(value >= 0)
        reserve(20)
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { tmp in
            var v = value
            var i = 24
            repeat {
                i -= 1
                tmp[i] = UInt8(truncatingIfNeeded: 48 + v % 10)
                v /= 10
            } while v > 0
            append(UnsafeRawBufferPointer(rebasing: tmp[i..<24]))
        }
    }

    public var bytes: [UInt8] { Array(readable) }
}

/// Immutable bytes shared by many writers: a cached file, a message framed once and sent to
/// many subscribers. Freed when the last reference goes.
public final class SharedBytes: @unchecked Sendable {
    // Sendable: never mutated after init.
    public let base: UnsafeRawPointer
    public let count: Int

    public init(_ bytes: UnsafeRawBufferPointer) {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        if bytes.count > 0 { p.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        base = UnsafeRawPointer(p)
        count = bytes.count
    }

    /// Copies the array's bytes. The copy happens inside `withUnsafeBytes`: a pointer returned
    /// out of that closure is dangling once the array's last use has passed, and an optimised
    /// build releases an owned array right there (issue 12: frames of 1 KB and more carried
    /// freed heap bytes).
    public convenience init(_ bytes: [UInt8]) {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        bytes.withUnsafeBytes { b in
            if b.count > 0 { p.copyMemory(from: b.baseAddress!, byteCount: b.count) }
        }
        self.init(adopting: p, count: bytes.count)
    }

    /// The array's bytes followed by at most `maxTail` bytes that `tail` writes at the pointer
    /// it is given (returning how many): one buffer where appending to the array first would
    /// copy it (a published message and its offset field).
    public convenience init(_ bytes: [UInt8], maxTail: Int, tail: (UnsafeMutableRawPointer) -> Int) {
        // Raw: the shared bytes' own storage, adopted below and freed by deinit; `tail` writes
        // only inside this call (a tail longer than `maxTail` is a bug, caught after it wrote).
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count + maxTail, 1), alignment: 16)
        bytes.withUnsafeBytes { b in
            if b.count > 0 { p.copyMemory(from: b.baseAddress!, byteCount: b.count) }
        }
        let n = tail(p + bytes.count)
        precondition(n >= 0 && n <= maxTail, "tail wrote \(n) bytes, more than \(maxTail)")
        self.init(adopting: p, count: bytes.count + n)
    }

    /// Takes ownership of memory allocated with `UnsafeMutableRawPointer.allocate`.
    public init(adopting pointer: UnsafeMutableRawPointer, count: Int) {
        base = UnsafeRawPointer(pointer)
        self.count = count
    }

    deinit { UnsafeMutableRawPointer(mutating: base).deallocate() }

    public var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}
