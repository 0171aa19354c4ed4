#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyLoop

/// Bytes waiting to be written to one socket: allocated only when a write would block, freed
/// when it drains.
final class OutputQueue {
    enum Chunk {
        case bytes(ByteBuffer)
        case shared(SharedBytes, start: Int, end: Int)
        case file(FileRef, offset: Int, end: Int)
    }

    var chunks: [Chunk] = []
    var totalBytes = 0

    var isEmpty: Bool { chunks.isEmpty }

    func append(_ c: Chunk) {
        switch c {
        case .bytes(let b): totalBytes += b.readableBytes
        case .shared(_, let s, let e): totalBytes += e - s
        case .file(_, let o, let e): totalBytes += e - o
        }
        chunks.append(c)
    }

    /// Writes as much as the socket takes: `writev` over memory chunks (up to 64 at once),
    /// `sendfile` for files. Returns the bytes written; throws on a dead socket.
    func drain(_ fd: Int32) throws(IOError) -> Int {
        var written = 0
        return try withUnsafeTemporaryAllocation(of: iovec.self, capacity: 64) { iov throws(IOError) -> Int in
        while !chunks.isEmpty {
            if case .file(let f, let off, let end) = chunks[0] {
                var o = off
                switch try Sys.sendfile(fd, f.fd, offset: &o, count: min(end - off, 1 << 20)) {
                case .wouldBlock: return written
                case .done(let n):
                    if n == 0 { throw IOError(errno: EIO, function: "sendfile: file shrank") }
                    written += n
                    totalBytes -= n
                    if o >= end { chunks.removeFirst() } else { chunks[0] = .file(f, offset: o, end: end) }
                }
                continue
            }
            var n = 0
            for c in chunks {
                if n == 64 { break }
                switch c {
                case .bytes(let b):
                    iov[n] = iovec(iov_base: b.base + b.readerIndex, iov_len: b.readableBytes)
                case .shared(let s, let start, let end):
                    iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: s.base + start), iov_len: end - start)
                case .file:
                    break
                }
                if case .file = c { break }
                n += 1
            }
            let r = try Sys.writev(fd, iov.baseAddress!, n)
            guard case .done(var w) = r else { return written }
            written += w
            totalBytes -= w
            while w > 0 {
                switch chunks[0] {
                case .bytes(let b):
                    let k = min(w, b.readableBytes)
                    b.moveReader(by: k)
                    w -= k
                    if b.isEmpty { chunks.removeFirst() }
                case .shared(let s, let start, let end):
                    let k = min(w, end - start)
                    w -= k
                    if start + k == end { chunks.removeFirst() } else { chunks[0] = .shared(s, start: start + k, end: end) }
                case .file:
                    preconditionFailure("writev wrote past the memory chunks")
                }
            }
        }
        return written
        }
    }
}
