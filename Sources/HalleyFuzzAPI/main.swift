import HalleyCrypto
import HalleyProtocol

/// libFuzzer entry for the Pusher HTTP API's authentication: the input is a query string, a
/// newline, and a body.
/// - The query is parsed (percent-decoding) and verified as an attacker would send it: any
///   answer but a crash is fine, and it must never pass with the wrong secret.
/// - Then it is signed as an SDK signs it (every `auth_*` and `body_md5` replaced) and
///   verified again: a request the hub's own signer made must pass.
/// - The byte path (`PusherSignature.accepted`, on the query as sent) must never accept what
///   the string path refuses, and must accept the signed request re-encoded as a query when
///   it is all ASCII with at most 16 parameters.
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
    let byBytes = PusherSignature.accepted(
        method: "POST", path: "/apps/1/events", rawQuery: query[...], body: body, now: now,
        secretsFor: { $0 == "key" ? ["secret"] : [] })
    if let k = byBytes {
        let byStrings = try? PusherSignature.verify(
            method: "POST", path: "/apps/1/events", query: pairs, body: body, now: now,
            secretsFor: { $0 == "key" ? ["secret"] : [] })
        if byStrings != k {
            fatalError("the byte path accepted \(k), the string path answered \(String(describing: byStrings))")
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
    let raw = signed.map { encoded($0.0) + "=" + encoded($0.1) }.joined(separator: "&")
    let ascii = signed.allSatisfy { $0.0.utf8.allSatisfy { $0 < 0x80 } && $0.1.utf8.allSatisfy { $0 < 0x80 } }
    let taken = PusherSignature.accepted(
        method: "POST", path: "/apps/1/events", rawQuery: raw[...], body: body, now: now,
        secretsFor: { $0 == "key" ? ["secret"] : [] })
    if taken != nil && taken != "key" { fatalError("the byte path accepted \(taken!) for \(raw)") }
    if ascii && signed.count <= 16 && taken == nil { fatalError("the byte path refused \(raw)") }
    return 0
}

/// Every byte but letters, digits and `-._~` as `%XX`.
func encoded(_ s: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    for c in s.utf8 {
        switch c {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x2D, 0x2E, 0x5F, 0x7E: out.append(c)
        default: out += [0x25, hex[Int(c >> 4)], hex[Int(c & 15)]]
        }
    }
    return String(decoding: out, as: UTF8.self)
}
