#if canImport(Glibc)
import Glibc
#endif

/// IMF-fixdate (RFC 9110 §5.6.7): "Sun, 06 Nov 1994 08:49:37 GMT".
public enum HTTPDate {
    static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    public static func format(_ epochSeconds: Int) -> String {
        var t = tm()
        var s = time_t(epochSeconds)
        gmtime_r(&s, &t)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(t.tm_wday)]), \(two(t.tm_mday)) \(months[Int(t.tm_mon)]) \(t.tm_year + 1900) "
            + "\(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec)) GMT"
    }

    /// Parses an IMF-fixdate; nil for anything else (the obsolete forms are not accepted:
    /// a failed parse only costs a full response instead of a 304).
    public static func parse(_ s: String) -> Int? {
        let u = Array(s.utf8)
        guard u.count == 29, u[3] == 44, u[4] == 32, u[7] == 32, u[11] == 32, u[16] == 32,
            u[19] == 58, u[22] == 58, u[25] == 32,
            String(decoding: u[26..<29], as: UTF8.self) == "GMT"
        else { return nil }
        func num(_ r: Range<Int>) -> Int? {
            var v = 0
            for c in u[r] {
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        guard let day = num(5..<7), let year = num(12..<16), let hh = num(17..<19),
            let mm = num(20..<22), let ss = num(23..<25),
            let mon = months.firstIndex(of: String(decoding: u[8..<11], as: UTF8.self))
        else { return nil }
        var t = tm()
        t.tm_year = Int32(year - 1900)
        t.tm_mon = Int32(mon)
        t.tm_mday = Int32(day)
        t.tm_hour = Int32(hh)
        t.tm_min = Int32(mm)
        t.tm_sec = Int32(ss)
        return Int(timegm(&t))
    }
}
