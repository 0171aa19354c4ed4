#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// One readable line per event, to standard error. A line is written with one `write(2)`, so
/// lines from different loops never interleave.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case debug = 0, info, warning, error

    public init?(name: String) {
        switch name.lowercased() {
        case "debug": self = .debug
        case "info": self = .info
        case "warn", "warning": self = .warning
        case "error": self = .error
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .debug: return "debug"
        case .info: return "info"
        case .warning: return "warning"
        case .error: return "error"
        }
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// How a log line is written: `2026-12-06T08:00:00.000Z info text` or one JSON object
/// (`{"time":"…","level":"info","msg":"text"}`) for log collectors.
public enum LogFormat: Int, Sendable {
    case text = 0, json
}

public enum Log {
    private static let threshold = Atomic<Int>(LogLevel.info.rawValue)
    private static let formatValue = Atomic<Int>(LogFormat.text.rawValue)

    public static var format: LogFormat {
        get { LogFormat(rawValue: formatValue.load(ordering: .relaxed)) ?? .text }
        set { formatValue.store(newValue.rawValue, ordering: .relaxed) }
    }

    public static var level: LogLevel {
        get { LogLevel(rawValue: threshold.load(ordering: .relaxed)) ?? .info }
        set { threshold.store(newValue.rawValue, ordering: .relaxed) }
    }

    @inline(__always) public static func enabled(_ l: LogLevel) -> Bool {
        l.rawValue >= threshold.load(ordering: .relaxed)
    }

    public static func debug(_ message: @autoclosure () -> String) { emit(.debug, message) }
    public static func info(_ message: @autoclosure () -> String) { emit(.info, message) }
    public static func warning(_ message: @autoclosure () -> String) { emit(.warning, message) }
    public static func error(_ message: @autoclosure () -> String) { emit(.error, message) }

    /// Start and stop lines: written whatever the level (the start line carries the port).
    public static func lifecycle(_ message: @autoclosure () -> String) { emit(.info, message, always: true) }

    private static func emit(_ l: LogLevel, _ message: () -> String, always: Bool = false) {
        guard always || enabled(l) else { return }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = tm()
        var secs = ts.tv_sec
        gmtime_r(&secs, &t)
        let ms = Int(ts.tv_nsec) / 1_000_000
        func pad(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        let stamp =
            "\(t.tm_year + 1900)-\(pad(t.tm_mon + 1, 2))-\(pad(t.tm_mday, 2))T"
            + "\(pad(t.tm_hour, 2)):\(pad(t.tm_min, 2)):\(pad(t.tm_sec, 2)).\(pad(Int32(ms), 3))Z"
        var line =
            format == .json
            ? "{\"time\":\"\(stamp)\",\"level\":\"\(l.name)\",\"msg\":\"\(jsonEscaped(message()))\"}\n"
            : "\(stamp) \(l.name) \(message())\n"
        line.withUTF8 { p in
            var off = 0
            while off < p.count {
                let n = write(2, p.baseAddress! + off, p.count - off)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
                off += n
            }
        }
    }

    /// `text` as the inside of a JSON string: quotes, backslashes and control characters
    /// escaped (RFC 8259 section 7); everything else as it is (UTF-8).
    public static func jsonEscaped(_ text: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count + 8)
        let hex = Array("0123456789abcdef".utf8)
        for b in text.utf8 {
            switch b {
            case UInt8(ascii: "\""): out += [92, 34]
            case UInt8(ascii: "\\"): out += [92, 92]
            case 10: out += [92, UInt8(ascii: "n")]
            case 13: out += [92, UInt8(ascii: "r")]
            case 9: out += [92, UInt8(ascii: "t")]
            case 0..<32, 127: out += [92, UInt8(ascii: "u"), 48, 48, hex[Int(b >> 4)], hex[Int(b & 15)]]
            default: out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
