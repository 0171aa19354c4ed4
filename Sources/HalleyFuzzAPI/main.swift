import HalleyCrypto
import HalleyProtocol

/// libFuzzer entry for the Pusher HTTP API's authentication: the input is a query string, a
/// newline, and a body.
/// - The query is parsed (percent-decoding) and verified as an attacker would send it: any
///   answer but a crash is fine, and it must never pass with the wrong secret.
/// - Then it is signed as an SDK signs it (every `auth_*` and `body_md5` replaced) and
///   verified again: a request the hub's own signer made must pass.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let nl = bytes.firstIndex(of: 0x0A) ?? size
    let query = String(decoding: bytes[0..<nl], as: UTF8.self)
    let body = nl < size ? Array(bytes[(nl + 1)...]) : []
    let now = 1_800_000_000
    let pairs = Query.parse(query[...])
    _ = Query.value(pairs, "auth_key")  // the lookup the API does first
    if (try? PusherSignature.verify(
        method: "POST", path: "/apps/1/events", query: pairs, body: body, now: now,
        secretsFor: { $0 == "key" ? ["secret"] : [] })) != nil
    {
        // Passing needs an HMAC under the secret: the fuzzer cannot have made one unless the
        // input is a valid signed request (the committed seeds carry none).
        let sig = Query.value(pairs, "auth_signature") ?? ""
        let unsigned = pairs.filter { $0.0.lowercased() != "auth_signature" }
        if PusherSignature.sign(secret: "secret", method: "POST", path: "/apps/1/events", query: unsigned).lowercased()
            != sig.lowercased()
        {
            fatalError("verified a request whose signature is not the secret's")
        }
    }
    var signed = pairs.filter {
        !["auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5"].contains($0.0.lowercased())
    }
    signed += [("auth_key", "key"), ("auth_timestamp", String(now - 5)), ("auth_version", "1.0")]
    if !body.isEmpty { signed.append(("body_md5", Digest.hex(Digest.md5(body)))) }
    let sig = PusherSignature.sign(secret: "secret", method: "POST", path: "/apps/1/events", query: signed)
    signed.append(("auth_signature", sig))
    do {
        _ = try PusherSignature.verify(
            method: "POST", path: "/apps/1/events", query: signed, body: body, now: now,
            secretsFor: { $0 == "key" ? ["secret"] : [] })
    } catch {
        fatalError("a request signed by the SDK rules was refused: \(error) for \(signed)")
    }
    return 0
}
