import HalleyHub

/// libFuzzer entry for the apps file (`--config`): any bytes give apps or an error naming the
/// file, never a crash; the apps it gives keep the file's invariants (digit ids, unique ids
/// and keys, non-empty keys and secrets).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: size))
    let apps: [App]
    do {
        apps = try AppsFile.parse(bytes, file: "fuzz.json")
    } catch {
        if !error.description.hasPrefix("fuzz.json") { fatalError("an error that does not name the file: \(error)") }
        return 0
    }
    if apps.isEmpty { fatalError("a file with no apps was accepted") }
    if Set(apps.map(\.id)).count != apps.count || Set(apps.map(\.key)).count != apps.count {
        fatalError("duplicate id or key accepted")
    }
    for a in apps {
        if a.id.isEmpty || !a.id.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            fatalError("app id \(a.id) is not digits")
        }
        if a.key.isEmpty || a.secret.isEmpty { fatalError("empty key or secret accepted") }
    }
    return 0
}
