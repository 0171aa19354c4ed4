#if canImport(Glibc)
import Glibc
#endif
import HalleyHTTP
import HalleyProtocol
import HalleyWebSocket

/// The apps configuration file (`--config FILE`): JSON, checked strictly, every error naming
/// the file, the app and the field.
///
/// ```json
/// {"apps": [{
///   "id": "1", "key": "app-key", "secret": "app-secret",
///   "token": "optional bearer token for POST /publish",
///   "enabled": true, "client_events": true, "client_events_per_second": 10,
///   "max_connections": 0, "max_event_bytes": 10240,
///   "allowed_origins": ["https://example.com", "*.example.com"],
///   "webhooks": [{"url": "http://127.0.0.1:9000/hook", "events": ["channel_occupied", "channel_vacated"]}]
/// }]}
/// ```
///
/// `id`, `key`, `secret` are required; ids and keys are unique. Unknown fields are errors
/// (a misspelt option must not be silently ignored). A webhook without `events` gets them all.
public enum AppsFile {
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    static let appFields: Set<String> = [
        "id", "key", "secret", "token", "enabled", "client_events", "client_events_per_second",
        "max_connections", "max_event_bytes", "allowed_origins", "webhooks",
    ]
    static let webhookFields: Set<String> = ["url", "events"]

    /// Reads and parses `path`.
    public static func load(_ path: String) throws(ParseError) -> [App] {
        guard let f = fopen(path, "rb") else {
            throw ParseError(description: "\(path): cannot read: \(String(cString: strerror(errno)))")
        }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = fread(&chunk, 1, chunk.count, f)
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < chunk.count {
                if ferror(f) != 0 {
                    throw ParseError(description: "\(path): cannot read: \(String(cString: strerror(errno)))")
                }
                break
            }
            if bytes.count > 16 << 20 { throw ParseError(description: "\(path): larger than 16 MiB") }
        }
        return try parse(bytes, file: path)
    }

    /// The apps of a configuration file's bytes. `file` names it in errors.
    public static func parse(_ bytes: [UInt8], file: String = "config") throws(ParseError) -> [App] {
        func fail(_ at: String, _ why: String) -> ParseError {
            ParseError(description: at.isEmpty ? "\(file): \(why)" : "\(file): \(at): \(why)")
        }
        let root: JSONValue
        do throws(JSONError) { root = try JSONParser.parse(bytes) } catch { throw fail("", "\(error)") }
        guard let top = root.object else { throw fail("", "expected an object {\"apps\": [...]}") }
        if let k = top.keys.sorted().first(where: { $0 != "apps" }) { throw fail("", "unknown field \"\(k)\"") }
        guard let list = top["apps"] else { throw fail("", "missing \"apps\"") }
        guard let items = list.array else { throw fail("apps", "expected an array of apps") }
        guard !items.isEmpty else { throw fail("apps", "expected at least one app") }

        var apps: [App] = []
        var ids: [String: Int] = [:]
        var keys: [String: Int] = [:]
        for (n, item) in items.enumerated() {
            let at = "apps[\(n)]"
            guard let o = item.object else { throw fail(at, "expected an object") }
            if let k = o.keys.sorted().first(where: { !appFields.contains($0) }) {
                throw fail(at, "unknown field \"\(k)\"")
            }
            let app = try parseApp(o, at: at, fail)
            if let other = ids[app.id] { throw fail("\(at).id", "duplicate id \"\(app.id)\" (also apps[\(other)])") }
            if let other = keys[app.key] {
                throw fail("\(at).key", "duplicate key \"\(app.key)\" (also apps[\(other)])")
            }
            ids[app.id] = n
            keys[app.key] = n
            apps.append(app)
        }
        return apps
    }

    static func parseApp(
        _ o: [String: JSONValue], at: String, _ fail: (String, String) -> ParseError
    ) throws(ParseError) -> App {
        func string(_ k: String, required: Bool) throws(ParseError) -> String? {
            guard let v = o[k] else {
                if required { throw fail(at, "missing \"\(k)\"") }
                return nil
            }
            guard let s = v.string else { throw fail("\(at).\(k)", "expected a string") }
            guard !s.isEmpty else { throw fail("\(at).\(k)", "expected a non-empty string") }
            return s
        }
        func bool(_ k: String) throws(ParseError) -> Bool? {
            guard let v = o[k] else { return nil }
            guard case .bool(let b) = v else { throw fail("\(at).\(k)", "expected true or false") }
            return b
        }
        func int(_ k: String, min: Int, max: Int = 1 << 30) throws(ParseError) -> Int? {
            guard let v = o[k] else { return nil }
            guard case .number(let s) = v, let i = Int(s), i >= min, i <= max else {
                throw fail("\(at).\(k)", "expected a whole number from \(min) to \(max)")
            }
            return i
        }

        // The Pusher SDKs refuse app ids that are not digits; a JSON number is taken as its digits.
        let id: String
        switch o["id"] {
        case nil: throw fail(at, "missing \"id\"")
        case .number(let s)?, .string(let s)?:
            guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw fail("\(at).id", "expected digits, got \"\(s)\"")
            }
            id = s
        default: throw fail("\(at).id", "expected digits, got \(o["id"]!.serializedText)")
        }
        let key = try string("key", required: true)!
        guard !key.contains("/") else { throw fail("\(at).key", "expected a key without '/'") }
        var app = App(
            id: id, key: key, secret: try string("secret", required: true)!, token: try string("token", required: false)
        )
        if let b = try bool("enabled") { app.enabled = b }
        if let b = try bool("client_events") { app.clientEvents = b }
        if let n = try int("client_events_per_second", min: 1) { app.clientEventsPerSecond = n }
        if let n = try int("max_connections", min: 0) { app.maxConnections = n }
        app.maxEventBytes = try int("max_event_bytes", min: 1)
        if let v = o["allowed_origins"] {
            let k = "\(at).allowed_origins"
            guard let a = v.array else { throw fail(k, "expected an array of origins") }
            var origins: [String] = []
            for (i, e) in a.enumerated() {
                guard let s = e.string, !s.isEmpty else { throw fail("\(k)[\(i)]", "expected a non-empty string") }
                origins.append(s)
            }
            guard !origins.isEmpty else { throw fail(k, "expected at least one origin (\"*\" for any)") }
            app.origins = OriginPolicy(origins)
        }
        if let v = o["webhooks"] {
            guard let a = v.array else { throw fail("\(at).webhooks", "expected an array of webhooks") }
            for (i, e) in a.enumerated() {
                app.webhooks.append(try parseWebhook(e, at: "\(at).webhooks[\(i)]", fail))
            }
        }
        return app
    }

    static func parseWebhook(
        _ v: JSONValue, at: String, _ fail: (String, String) -> ParseError
    ) throws(ParseError) -> Webhook {
        guard let o = v.object else { throw fail(at, "expected an object {\"url\": ..., \"events\": [...]}") }
        if let k = o.keys.sorted().first(where: { !webhookFields.contains($0) }) {
            throw fail(at, "unknown field \"\(k)\"")
        }
        guard let u = o["url"] else { throw fail(at, "missing \"url\"") }
        guard let url = u.string else { throw fail("\(at).url", "expected a string") }
        do throws(HTTPURL.ParseError) { _ = try HTTPURL(url) } catch { throw fail("\(at).url", "\(error)") }
        var events: Set<String> = []
        if let ev = o["events"] {
            guard let a = ev.array else { throw fail("\(at).events", "expected an array of event names") }
            guard !a.isEmpty else {
                throw fail("\(at).events", "expected at least one event name (leave \"events\" out for all)")
            }
            for (i, e) in a.enumerated() {
                guard let s = e.string else { throw fail("\(at).events[\(i)]", "expected a string") }
                guard WebhookEvent.names.contains(s) else {
                    throw fail(
                        "\(at).events[\(i)]",
                        "unknown event \"\(s)\" (expected one of \(WebhookEvent.names.sorted().joined(separator: ", ")))"
                    )
                }
                events.insert(s)
            }
        }
        return Webhook(url: url, events: events)
    }
}

extension JSONValue {
    fileprivate var serializedText: String { String(decoding: serialized, as: UTF8.self) }
}
