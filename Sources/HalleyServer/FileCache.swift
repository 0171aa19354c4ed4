#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyHTTP

/// Static files of one loop: small files kept in memory with their response headers encoded
/// once, revalidated with `stat` at most once a second; large files sent with `sendfile`.
/// Loop-confined: each loop has its own, so no lock.
final class FileCache {
    struct Entry {
        let realPath: String
        let size: Int
        let mtime: timespec
        let inode: UInt64
        /// The file's bytes, when small enough to keep.
        let body: SharedBytes?
        /// "Content-Type…\r\nETag…\r\nLast-Modified…\r\nCache-Control…\r\n".
        let headers: SharedBytes
        let etag: String
        let lastModified: Int
        var checkedAt: Int64
    }

    enum Lookup {
        case file(Entry)
        case directory
        case notFound
    }

    let root: String
    let config: ServerConfig
    private var entries: [String: Entry] = [:]
    /// Entries by the request's path as sent (still percent-encoded), so that a hit skips
    /// decoding and checking the path: one hash lookup per request.
    private var byRawPath: [Substring: Entry] = [:]
    private var cachedBytes = 0
    static let maxEntries = 4096
    static let maxCachedBytes = 64 * 1024 * 1024

    init(root: String, config: ServerConfig) {
        self.root = FileCache.realPath(root) ?? root
        self.config = config
    }

    static func realPath(_ p: String) -> String? {
        guard let r = realpath(p, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    func recent(rawPath: Substring, now: Int64) -> Entry? {
        guard let e = byRawPath[rawPath], now - e.checkedAt < 1000 else { return nil }
        return e
    }

    func remember(rawPath: Substring, _ e: Entry) {
        if byRawPath.count >= Self.maxEntries { byRawPath.removeAll() }
        byRawPath[rawPath] = e
    }

    /// `relative` is the decoded path below the root, starting with "/" and holding no "."
    /// or ".." segment.
    func lookup(_ relative: String, now: Int64) -> Lookup {
        if let e = entries[relative], now - e.checkedAt < 1000 { return .file(e) }
        let candidate = relative == "/" ? root : root + relative
        var st = stat()
        guard lstat(candidate, &st) == 0 else { entries[relative] = nil; return .notFound }
        // No symbolic link anywhere below the root: the resolved path must be the lexical one.
        guard let real = FileCache.realPath(candidate),
            real == candidate || (candidate.hasSuffix("/") && real + "/" == candidate)
        else {
            entries[relative] = nil
            return .notFound
        }
        if (st.st_mode & S_IFMT) == S_IFDIR { return .directory }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .notFound }
        if var e = entries[relative], e.size == Int(st.st_size), e.inode == UInt64(st.st_ino),
            e.mtime.tv_sec == st.st_mtim.tv_sec, e.mtime.tv_nsec == st.st_mtim.tv_nsec
        {
            e.checkedAt = now
            entries[relative] = e
            return .file(e)
        }
        guard let e = load(relative: relative, path: real, now: now) else { return .notFound }
        if let old = entries[relative], let b = old.body { cachedBytes -= b.count }
        if entries.count >= Self.maxEntries || cachedBytes + (e.body?.count ?? 0) > Self.maxCachedBytes {
            entries.removeAll()
            byRawPath.removeAll()
            cachedBytes = 0
        }
        entries[relative] = e
        cachedBytes += e.body?.count ?? 0
        return .file(e)
    }

    private func load(relative: String, path: String, now: Int64) -> Entry? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        let size = Int(st.st_size)
        var body: SharedBytes? = nil
        if size <= config.staticCacheMaxFileBytes {
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: 16)
            var got = 0
            while got < size {
                let n = pread(fd, p + got, size - got, off_t(got))
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                got += n
            }
            guard got == size else { p.deallocate(); return nil }
            body = SharedBytes(adopting: p, count: size)
        }
        let mtimeMillis = Int(st.st_mtim.tv_sec) * 1000 + Int(st.st_mtim.tv_nsec) / 1_000_000
        let etag = "\"\(String(mtimeMillis, radix: 16))-\(String(size, radix: 16))\""
        let lastModified = Int(st.st_mtim.tv_sec)
        let headers =
            "Content-Type: \(ContentTypes.forPath(relative))\r\n"
            + "ETag: \(etag)\r\n"
            + "Last-Modified: \(HTTPDate.format(lastModified))\r\n"
            + "Cache-Control: \(config.staticCacheControl)\r\n"
            // Scripts may be loaded by pages of other origins: a module script
            // (`<script type="module" src=…/halley.mjs>`, `import`) is fetched in CORS mode.
            + (relative.hasSuffix(".js") || relative.hasSuffix(".mjs") ? "Access-Control-Allow-Origin: *\r\n" : "")
        return Entry(
            realPath: path, size: size, mtime: st.st_mtim, inode: UInt64(st.st_ino), body: body,
            headers: SharedBytes(Array(headers.utf8)), etag: etag, lastModified: lastModified,
            checkedAt: now)
    }

    /// Opens a large file for one response; nil when it changed or vanished since `entry`.
    func openForSending(_ entry: Entry) -> FileRef? {
        let fd = open(entry.realPath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) == entry.size, UInt64(st.st_ino) == entry.inode else {
            close(fd)
            return nil
        }
        return FileRef(fd: fd)
    }
}

enum ContentTypes {
    static let table: [String: String] = [
        "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8",
        "css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8",
        "mjs": "text/javascript; charset=utf-8", "json": "application/json",
        "map": "application/json", "txt": "text/plain; charset=utf-8",
        "md": "text/markdown; charset=utf-8", "xml": "application/xml",
        "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
        "gif": "image/gif", "ico": "image/x-icon", "webp": "image/webp", "avif": "image/avif",
        "wasm": "application/wasm", "woff": "font/woff", "woff2": "font/woff2",
        "ttf": "font/ttf", "otf": "font/otf", "pdf": "application/pdf",
        "mp3": "audio/mpeg", "mp4": "video/mp4", "webm": "video/webm", "wav": "audio/wav",
        "webmanifest": "application/manifest+json",
    ]

    static func forPath(_ path: String) -> String {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return "application/octet-stream" }
        return table[path[path.index(after: dot)...].lowercased()] ?? "application/octet-stream"
    }
}
