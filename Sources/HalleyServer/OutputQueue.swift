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
    /// TLS connections: records made and not yet written. They come before `chunks`, which
    /// stay plaintext until their turn (a file is read and encrypted as the socket drains).
    var cipher: ByteBuffer?

    var isEmpty: Bool { chunks.isEmpty && (cipher?.isEmpty ?? true) }

    /// Where a TLS session's records go (they are written before anything else queued).
    func cipherBuffer() -> ByteBuffer {
        if let c = cipher { return c }
        let c = ByteBuffer(capacity: 16 * 1024 + 64)
        cipher = c
        return c
    }

    /// Adds the records `tls` has produced (a handshake message, an alert) to the queue.
    func takeRecords(from tls: TLSSession) {
        let c = cipherBuffer()
        let before = c.readableBytes
        tls.takeOutput(into: c)
        totalBytes += c.readableBytes - before
    }

    func append(_ c: Chunk) {
        switch c {
        case .bytes(let b): totalBytes += b.readableBytes
        case .shared(_, let s, let e): totalBytes += e - s
        case .file(_, let o, let e): totalBytes += e - o
        }
        chunks.append(c)
    }

    static let tlsWriteFailed = IOError(errno: EPROTO, function: "TLS: SSL_write")

    /// TLS: writes the records made so far, then encrypts the next plaintext (at most 64 KiB
    /// at a time, files read into `scratch`) and writes that, until the socket is full or
    /// nothing is left. Returns the ciphertext bytes written.
    func drain(_ fd: Int32, tls: TLSSession, scratch: UnsafeMutableRawBufferPointer) throws(IOError) -> Int {
        var written = 0
        while true {
            if let c = cipher, !c.isEmpty {
                guard case .done(let n) = try Sys.send(fd, c.readable) else { return written }
                c.moveReader(by: n)
                totalBytes -= n
                written += n
                continue
            }
            guard !chunks.isEmpty else {
                cipher = nil  // an idle TLS connection keeps no buffer
                tls.shrinkIfIdle()
                return written
            }
            let c = cipherBuffer()
            let before = c.readableBytes
            var budget = 64 * 1024
            while budget > 0, !chunks.isEmpty {
                switch chunks[0] {
                case .bytes(let b):
                    let k = min(budget, b.readableBytes)
                    guard tls.encrypt(UnsafeRawBufferPointer(start: b.base + b.readerIndex, count: k), into: c) else {
                        throw Self.tlsWriteFailed
                    }
                    b.moveReader(by: k)
                    if b.isEmpty { chunks.removeFirst() }
                    totalBytes -= k
                    budget -= k
                case .shared(let s, let start, let end):
                    let k = min(budget, end - start)
                    guard tls.encrypt(UnsafeRawBufferPointer(start: s.base + start, count: k), into: c) else {
                        throw Self.tlsWriteFailed
                    }
                    if start + k == end {
                        chunks.removeFirst()
                    } else {
                        chunks[0] = .shared(s, start: start + k, end: end)
                    }
                    totalBytes -= k
                    budget -= k
                case .file(let f, let off, let end):
                    let want = min(budget, end - off, scratch.count)
                    let n = pread(f.fd, scratch.baseAddress, want, off_t(off))
                    if n <= 0 { throw IOError(errno: n < 0 ? errno : EIO, function: "pread: file shrank") }
                    guard tls.encrypt(UnsafeRawBufferPointer(rebasing: scratch[0..<n]), into: c) else {
                        throw Self.tlsWriteFailed
                    }
                    if off + n >= end { chunks.removeFirst() } else { chunks[0] = .file(f, offset: off + n, end: end) }
                    totalBytes -= n
                    budget -= n
                }
            }
            tls.takeOutput(into: c)
            totalBytes += c.readableBytes - before
        }
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
                        iov[n] = iovec(
                            iov_base: UnsafeMutableRawPointer(mutating: s.base + start), iov_len: end - start)
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
                        if start + k == end {
                            chunks.removeFirst()
                        } else {
                            chunks[0] = .shared(s, start: start + k, end: end)
                        }
                    case .file:
                        preconditionFailure("writev wrote past the memory chunks")
                    }
                }
            }
            return written
        }
    }
}
