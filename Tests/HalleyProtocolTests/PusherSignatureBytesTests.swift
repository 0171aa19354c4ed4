import Testing

@testable import HalleyProtocol

/// The byte path of `PusherSignature.verify(…rawQuery:…)` against the string path: whatever it
/// accepts, the string path accepts with the same key; what it leaves (non-ASCII, too many
/// parameters, an unusual timestamp) and every refusal get the string path's answer.
@Suite struct PusherSignatureBytesTests {
    // Pusher's worked example ("HTTP API reference", "Generating authentication signatures").
    let key = "278d425bdf160c739803"
    let secret = "7ad3773142a6692b25b8"
    let body = Array(#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#.utf8)
    let now = 1353088179
    let path = "/apps/3/events"

    func secrets(_ k: String) -> [String] { k == key ? ["other-secret", secret] : [] }

    func stringPath(_ raw: String, body: [UInt8]? = nil) -> Result<String, PusherSignature.Failure> {
        Result { () throws(PusherSignature.Failure) -> String in
            try PusherSignature.verify(
                method: "POST", path: path, query: Query.parse(Substring(raw)), body: body ?? self.body, now: now,
                secretsFor: secrets)
        }
    }

    func bytePath(_ raw: String, body: [UInt8]? = nil) -> String? {
        PusherSignature.accepted(
            method: "POST", path: path, rawQuery: Substring(raw), body: body ?? self.body, now: now,
            secretsFor: secrets)
    }

    func publicPath(_ raw: String, body: [UInt8]? = nil) -> Result<String, PusherSignature.Failure> {
        Result { () throws(PusherSignature.Failure) -> String in
            try PusherSignature.verify(
                method: "POST", path: path, rawQuery: Substring(raw), body: body ?? self.body, now: now,
                secretsFor: secrets)
        }
    }

    /// `raw` with its signature (made by the string path's signer) appended.
    func signed(_ raw: String) -> String {
        let sig = PusherSignature.sign(secret: secret, method: "POST", path: path, query: Query.parse(Substring(raw)))
        return raw + "&auth_signature=" + sig
    }

    let documented =
        "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"

    @Test func takesTheDocumentedRequest() {
        let raw = documented + "&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        #expect(bytePath(raw) == key)
        #expect(publicPath(raw) == .success(key))
        // The signature in upper case, parameters in another order, keys spelled otherwise.
        let reordered =
            "AUTH_SIGNATURE=DA454824C97BA181A32CCC17A72625BA02771F50B50E1E7430E47A1F3F457E6C&body%5Fmd5=ec365a775a4cd0599faeb73354201b6f&auth_version=1.0&Auth_Timestamp=1353088179&auth_key=278d425bdf160c739803"
        #expect(bytePath(reordered) == key)
    }

    @Test func refusesWhatTheStringPathRefuses() {
        let good = signed(documented)
        #expect(bytePath(good) == key)
        let wrong: [(String, PusherSignature.Failure)] = [
            (good.replacingOccurrences("1353088179", "1353087578"), .expired(skew: 601)),
            (good.replacingOccurrences("auth_key=", "auth_kez="), .missing("auth_key")),
            (good.replacingOccurrences("auth_version=1.0", "auth_version=1.00"), .badVersion),
            (good.replacingOccurrences("ec365a", "ec365b"), .bodyMD5Mismatch),
            (good + "&extra=1", .badSignature),
            (good.replacingOccurrences("278d42", "278d43"), .unknownKey),
        ]
        for (raw, failure) in wrong {
            #expect(bytePath(raw) == nil, "\(raw)")
            #expect(publicPath(raw) == .failure(failure), "\(raw)")
            #expect(stringPath(raw) == .failure(failure), "\(raw)")
        }
        #expect(bytePath(good, body: Array("{}".utf8)) == nil)
        #expect(publicPath(good, body: Array("{}".utf8)) == .failure(.bodyMD5Mismatch))
        #expect(publicPath("") == .failure(.missing("auth_key")))
    }

    /// Queries made from pieces that stress the decoding and the sorting, each signed as the
    /// string path reads it: both paths agree, and the byte path takes every one it should.
    @Test func agreesWithTheStringPath() {
        let extras = [
            "a=1", "A=2", "b", "=v", "z=%26%3D", "x=a+b", "y=%2", "y=%zz%4", "q=%41%42", "%62=c", "n=", "a_=",
            "u=%C3%A9", "v=é", "w=%FF", "AuTh_NoNcE=1", "auth_key=other", "auth_signature=0",
            // Keys decoded and lower-cased on the slow path, escapes cut short, separators
            // escaped, NUL bytes.
            "A+B=1", "%41=1", "%4A%4b=1", "a%=1", "%4=1", "k%4", "%3D=1", "%26=x", "+=1", "=", "%00=1", "a=%00",
            // Repeated authentication parameters (before or after the real ones: the last counts).
            "auth_timestamp=1353088179", "auth_timestamp=1", "auth_version=2.0", "body_md5=0",
            "AUTH_KEY=278d425bdf160c739803", "Auth%5FVersion=1.0",
        ]
        let timestamps = ["1353088179", "01353088179", "+1353088179", "1353088779", "1353088780", "abc", ""]
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ n: Int) -> Int {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((seed >> 33) % UInt64(n))
        }
        var taken = 0
        for round in 0..<3000 {
            var parts = [
                "auth_key=" + key, "auth_timestamp=" + timestamps[next(timestamps.count)], "auth_version=1.0",
                "body_md5=ec365a775a4cd0599faeb73354201b6f",
            ]
            for _ in 0..<next(5) { parts.insert(extras[next(extras.count)], at: next(parts.count + 1)) }
            if next(4) == 0 { parts.insert("", at: next(parts.count + 1)) }  // an empty segment: "&&"
            if next(3) == 0 {  // a key in another case, spelled with an escape, or both
                let i = next(parts.count)
                let kv = parts[i].split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                var k = String(kv[0])
                switch next(3) {
                case 0: k = k.uppercased()
                case 1: k = k.replacingOccurrences("_", "%5F")
                default: k = k.uppercased().replacingOccurrences("_", "%5F")
                }
                parts[i] = kv.count > 1 ? k + "=" + kv[1] : k
            }
            var raw = parts.joined(separator: "&")
            if round % 7 != 0 { raw = signed(raw) }
            if round % 11 == 0 { raw += String(repeating: "&p=1", count: 13) }  // past the byte path's limit
            checkDecoding(raw)
            let byBytes = bytePath(raw)
            let byStrings = stringPath(raw)
            #expect(publicPath(raw) == byStrings, "\(raw)")
            if let k = byBytes {
                #expect(byStrings == .success(k), "\(raw)")
                taken += 1
            } else if case .success = byStrings {
                // Left to the string path only for what the byte path does not take.
                let parsed = Query.parse(Substring(raw))
                let ascii = parsed.allSatisfy {
                    $0.0.utf8.allSatisfy { $0 < 0x80 } && $0.1.utf8.allSatisfy { $0 < 0x80 }
                }
                let ts = parsed.last { $0.0.lowercased() == "auth_timestamp" }?.1 ?? ""
                let plain = !ts.isEmpty && ts.utf8.allSatisfy { $0 >= 48 && $0 <= 57 }
                #expect(!ascii || parsed.count > PusherSignature.maxByteParams || !plain, "\(raw)")
            }
        }
        #expect(taken > 500)
    }

    /// The byte path's decoded parameters and signed text against `Query.parse` and
    /// `bytesToSign`, signed or not, whenever it takes the query (all ASCII, at most 16).
    func checkDecoding(_ raw: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let parsed = Query.parse(Substring(raw))
        var bytes = raw  // `withUTF8` is mutating
        bytes.withUTF8 { b in
            let query = UnsafeRawBufferPointer(b)
            guard query.count > 0 else { return }
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: query.count) { scratch in
                withUnsafeTemporaryAllocation(of: PusherSignature.ByteParam.self, capacity: 16) { params in
                    let n = PusherSignature.decodeParams(query, scratch.baseAddress!, params.baseAddress!)
                    let ascii = parsed.allSatisfy {
                        $0.0.utf8.allSatisfy { $0 < 0x80 } && $0.1.utf8.allSatisfy { $0 < 0x80 }
                    }
                    #expect((n != nil) == (ascii && parsed.count <= 16), "\(raw)", sourceLocation: sourceLocation)
                    guard let n else { return }
                    let text = UnsafeRawBufferPointer(scratch)
                    func string(_ start: Int, _ count: Int) -> String {
                        String(decoding: UnsafeRawBufferPointer(rebasing: text[start..<(start + count)]), as: UTF8.self)
                    }
                    let mine = (0..<n).map {
                        (string(params[$0].key, params[$0].keyCount), string(params[$0].value, params[$0].valueCount))
                    }
                    #expect(mine.map(\.0) == parsed.map { $0.0.lowercased() }, "\(raw)", sourceLocation: sourceLocation)
                    #expect(mine.map(\.1) == parsed.map(\.1), "\(raw)", sourceLocation: sourceLocation)
                    let signedText = PusherSignature.withSignedText(
                        method: "POST", path: path, text: text, params: UnsafeBufferPointer(rebasing: params[0..<n])
                    ) { Array($0) }
                    #expect(
                        signedText == PusherSignature.bytesToSign(method: "POST", path: path, query: parsed), "\(raw)",
                        sourceLocation: sourceLocation)
                }
            }
        }
    }

    /// The edges of what the byte path takes: 16 parameters and not 17, timestamps of 18
    /// digits and not 19, the clock's skew both ways, the body's digest, queries of separators
    /// only; each answered as the string path answers.
    @Test func edges() {
        func same(_ raw: String, body: [UInt8]? = nil, taken: Bool, sourceLocation: SourceLocation = #_sourceLocation) {
            checkDecoding(raw, sourceLocation: sourceLocation)
            let b = bytePath(raw, body: body)
            #expect((b != nil) == taken, "\(raw)", sourceLocation: sourceLocation)
            if let b { #expect(stringPath(raw, body: body) == .success(b), sourceLocation: sourceLocation) }
            #expect(
                publicPath(raw, body: body) == stringPath(raw, body: body), "\(raw)", sourceLocation: sourceLocation)
        }
        let base = "auth_key=\(key)&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        // Five parameters with the signature: eleven more make 16, twelve make 17.
        same(signed(base + "&auth_timestamp=1353088179" + String(repeating: "&p=1", count: 11)), taken: true)
        same(signed(base + "&auth_timestamp=1353088179" + String(repeating: "&p=1", count: 12)), taken: false)
        same(signed(base + "&auth_timestamp=000000001353088179"), taken: true)  // 18 digits
        same(signed(base + "&auth_timestamp=0000000001353088179"), taken: false)  // 19: the string path's
        same(signed(base + "&auth_timestamp=\(now - 600)"), taken: true)
        same(signed(base + "&auth_timestamp=\(now + 600)"), taken: true)
        same(signed(base + "&auth_timestamp=\(now - 601)"), taken: false)
        same(signed(base + "&auth_timestamp=\(now + 601)"), taken: false)
        same(signed(base + "&auth_timestamp=-\(now)"), taken: false)
        // The body: empty with and without its digest, non-empty without.
        let noMD5 = "auth_key=\(key)&auth_version=1.0&auth_timestamp=\(now)"
        same(signed(noMD5), body: [], taken: true)
        same(signed(noMD5 + "&body_md5=d41d8cd98f00b204e9800998ecf8427e"), body: [], taken: true)
        same(signed(noMD5), taken: false)
        for raw in ["&", "&&", "=", "==", "&=&", "auth_key", signed("")] { same(raw, taken: false) }
    }
}

extension String {
    fileprivate func replacingOccurrences(_ a: String, _ b: String) -> String {
        split(separator: a, omittingEmptySubsequences: false).joined(separator: b)
    }
}
