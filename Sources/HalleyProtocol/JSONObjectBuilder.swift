/// Writes one JSON object field by field, in the order given (wire messages keep `event`
/// first so a reader sees what it is at once). `open` leaves the closing brace off, so a
/// per-session tail (`,"halley:seq":N}`) can follow shared bytes.
public struct JSONObjectBuilder {
    public private(set) var bytes: [UInt8] = [UInt8(ascii: "{")]

    public init() {}

    mutating func key(_ k: String) {
        if bytes.count > 1 { bytes.append(UInt8(ascii: ",")) }
        JSONWriter.writeString(k, into: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    public mutating func string(_ k: String, _ v: String) {
        key(k)
        JSONWriter.writeString(v, into: &bytes)
    }

    public mutating func int(_ k: String, _ v: UInt64) {
        key(k)
        bytes.append(contentsOf: String(v).utf8)
    }

    public mutating func bool(_ k: String, _ v: Bool) {
        key(k)
        bytes.append(contentsOf: (v ? "true" : "false").utf8)
    }

    /// A value that is already JSON text.
    public mutating func raw(_ k: String, _ json: [UInt8]) {
        key(k)
        bytes.append(contentsOf: json)
    }

    public mutating func value(_ k: String, _ v: JSONValue) {
        key(k)
        JSONWriter.write(v, into: &bytes)
    }

    /// The object without its closing brace.
    public var open: [UInt8] { bytes }

    public var closed: [UInt8] { bytes + [UInt8(ascii: "}")] }
}
