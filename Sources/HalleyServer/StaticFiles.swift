import HalleyCore
import HalleyHTTP

/// Serves files below the public root: GET and HEAD only (405 otherwise), `ETag` and
/// `Last-Modified` with 304, and no way out of the root: `..` segments, encoded slashes and
/// NUL bytes are refused with 400, dotfiles and symbolic links are not found.
enum StaticFiles {
    static let handler: RouteHandler = { request, responder in
        responder.respond(response(for: request, responder: responder))
    }

    static func response(for request: HTTPRequest, responder: Responder) -> HTTPResponse {
        let ctx = responder.connection.ctx
        guard let files = ctx.files else { return .text(404, "Not Found\n") }
        guard request.method == .get || request.method == .head else {
            return .text(405, "Method Not Allowed\n", headers: [("Allow", "GET, HEAD")])
        }
        let now = ctx.loop.now
        if let entry = files.recent(rawPath: request.path, now: now) {
            return respond(request, entry, files)
        }
        let relative: String
        switch decodePath(request.path) {
        case .failure(let why):
            Log.info("static: 400 \(why): \(request.head.target)")
            return .text(400, "Bad Request\n")
        case .success(nil):
            return .text(404, "Not Found\n")
        case .success(let p?):
            relative = p
        }
        var lookup = files.lookup(relative, now: now)
        if case .directory = lookup {
            guard relative.hasSuffix("/") else {
                // From the normalised path: "//dir" must not become a scheme-relative "//dir/".
                var location = relative + "/"
                if let q = request.head.query { location += "?" + q }
                return HTTPResponse(status: 301, headers: [("Location", location)])
            }
            lookup = files.lookup(relative + "index.html", now: now)
        }
        guard case .file(let entry) = lookup else { return .text(404, "Not Found\n") }
        files.remember(rawPath: request.path, entry)
        return respond(request, entry, files)
    }

    static func respond(_ request: HTTPRequest, _ entry: FileCache.Entry, _ files: FileCache) -> HTTPResponse {
        if notModified(request.head.headers, entry) {
            var r = HTTPResponse(status: 304)
            r.encodedHeaders = entry.headers
            return r
        }
        var r: HTTPResponse
        if let body = entry.body {
            r = HTTPResponse(status: 200, body: .shared(body))
        } else if let f = files.openForSending(entry) {
            r = HTTPResponse(status: 200, body: .file(f, offset: 0, length: entry.size))
        } else {
            return .text(404, "Not Found\n")
        }
        r.encodedHeaders = entry.headers
        return r
    }

    /// RFC 9110 §13.1.2 / §13.1.3: If-None-Match wins over If-Modified-Since.
    static func notModified(_ h: HTTPHeaders, _ e: FileCache.Entry) -> Bool {
        if let inm = h["if-none-match"] {
            if inm.trimmingSpaces() == "*" { return true }
            for tag in inm.split(separator: ",") {
                var t = tag.trimmingSpaces()
                if t.hasPrefix("W/") { t = String(t.dropFirst(2)) }
                if t == e.etag { return true }
            }
            return false
        }
        if let ims = h["if-modified-since"], let since = HTTPDate.parse(ims) {
            return e.lastModified <= since
        }
        return false
    }

    enum PathError: Error { case malformed(String) }

    /// The decoded path below the root, nil when it names something never served (a
    /// dotfile), or an error for a request that tries to leave the root.
    static func decodePath(_ raw: Substring) -> Result<String?, PathError> {
        let lower = raw.lowercased()
        if lower.contains("%2f") || lower.contains("%5c") { return .failure(.malformed("encoded slash")) }
        guard let bytes = PercentDecoding.decode(raw) else { return .failure(.malformed("bad percent-encoding")) }
        if bytes.contains(0) { return .failure(.malformed("NUL byte")) }
        if bytes.contains(92) { return .failure(.malformed("backslash")) }
        guard let path = String(validating: bytes, as: UTF8.self) else { return .failure(.malformed("invalid UTF-8")) }
        var out = ""
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        for s in segments {
            if s == ".." || s == "." { return .failure(.malformed("dot segment")) }
            if s.hasPrefix(".") { return .success(nil) }
            out += "/"
            out += s
        }
        if out.isEmpty || path.hasSuffix("/") { out += "/" }
        return .success(out)
    }
}
