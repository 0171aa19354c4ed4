import HalleyProtocol

/// libFuzzer entry: client bytes into the JSON parser and the Pusher message decoder. A
/// value that parses must serialize to JSON that parses back to the same value.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let v = try? JSONParser.parse(bytes) else { return 0 }
    let again: JSONValue
    do {
        again = try JSONParser.parse(v.serialized)
    } catch {
        fatalError("serialized value does not parse: \(error)")
    }
    if again != v { fatalError("round trip changed the value") }
    _ = try? ClientMessage.decode(v)
    return 0
}
