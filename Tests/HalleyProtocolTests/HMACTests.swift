import Testing

@testable import HalleyCrypto

@Suite struct HMACTests {
    func hex(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = s.utf8.makeIterator()
        while let a = it.next(), let b = it.next() {
            out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16)!)
        }
        return out
    }

    /// H((K ^ opad) || H((K ^ ipad) || data)) spelled out with the plain digest.
    func reference(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var k = key.count > 64 ? key.withUnsafeBytes { Digest.sha256($0) } : key
        k += [UInt8](repeating: 0, count: 64 - k.count)
        let inner = (k.map { $0 ^ 0x36 } + data).withUnsafeBytes { Digest.sha256($0) }
        return (k.map { $0 ^ 0x5c } + inner).withUnsafeBytes { Digest.sha256($0) }
    }

    @Test func rfc4231Vectors() {
        let long = [UInt8](repeating: 0xaa, count: 131)
        let cases: [([UInt8], String, String)] = [
            (
                [UInt8](repeating: 0x0b, count: 20), "Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
            ),
            (
                Array("Jefe".utf8), "what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
            ),
            (
                long, "Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
            ),
            (
                long,
                "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
            ),
        ]
        for (key, data, mac) in cases {
            // Twice: the second call copies the key's cached states.
            for _ in 0..<2 { #expect(Digest.hmacSHA256(key: key, data: Array(data.utf8)) == hex(mac)) }
        }
    }

    @Test func manyKeysAndLengthsAgreeWithTheSpelledOutConstruction() {
        // More keys than the state table holds (it starts again), keys of 0 to 130 bytes and
        // data of 0 to 200 bytes, each key asked twice.
        for round in 0..<2 {
            for n in 0..<150 {
                let key = (0..<(n % 131)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ n) }
                let data = (0..<((n * 13) % 201)).map { UInt8(truncatingIfNeeded: $0 &+ n) }
                #expect(Digest.hmacSHA256(key: key, data: data) == reference(key: key, data: data), "\(round) \(n)")
                #expect(HMACKeys.shared.count <= HMACKeys.capacity)
            }
        }
    }

    @Test func threadsAtOnceGetTheRightMACs() async {
        let keys = (0..<8).map { i in Array("secret-\(i)".utf8) }
        let data = Array("POST\n/apps/1/events\nauth_key=k".utf8)
        let want = keys.map { reference(key: $0, data: data) }
        await withTaskGroup(of: Bool.self) { g in
            for t in 0..<8 {
                g.addTask {
                    (0..<500).allSatisfy { i in
                        Digest.hmacSHA256(key: keys[(i + t) % 8], data: data) == want[(i + t) % 8]
                    }
                }
            }
            for await ok in g { #expect(ok) }
        }
    }

    @Test func digestsGiveTheirKnownAnswers() {
        let abc = Array("abc".utf8)
        let two = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)  // two blocks
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(Digest.md5([]) == hex("d41d8cd98f00b204e9800998ecf8427e"))
        #expect(Digest.md5(abc) == hex("900150983cd24fb0d6963f7d28e17f72"))
        #expect(Digest.md5(Array("message digest".utf8)) == hex("f96b697d7cb7938d525a2f31aaf161d0"))
        #expect(Digest.sha1([]) == hex("da39a3ee5e6b4b0d3255bfef95601890afd80709"))
        #expect(Digest.sha1(abc) == hex("a9993e364706816aba3e25717850c26c9cd0d89d"))
        #expect(Digest.sha1(two) == hex("84983e441c3bd26ebaae4aa1f95129e5e54670f1"))
        #expect(Digest.sha1(million) == hex("34aa973cd4c4daa4f61eeb2bdbad27316534016f"))
        let sha256 = { (b: [UInt8]) in b.withUnsafeBytes { Digest.sha256($0) } }
        #expect(sha256([]) == hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
        #expect(sha256(abc) == hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        #expect(sha256(two) == hex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"))
        #expect(sha256(million) == hex("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"))
    }

    @Test func aStringKeyAndPiecesGiveTheSameMAC() {
        // A secret as a string (its UTF-8, non-ASCII included) and the data fed split at
        // every offset, or in single bytes, against the whole.
        for secret in ["app-secret", "", "s\u{e9}cr\u{e8}t-\u{1F511}", String(repeating: "k", count: 100)] {
            let data = Array("POST\n/apps/1/events\nauth_key=app-key&auth_timestamp=1700000000".utf8)
            let want = reference(key: Array(secret.utf8), data: data)
            #expect(Digest.hmacSHA256(key: secret, data: data) == want)
            data.withUnsafeBytes { d in
                for cut in 0...d.count {
                    var mac = HMACSHA256(key: secret)
                    mac.update(UnsafeRawBufferPointer(rebasing: d[..<cut]))
                    mac.update(UnsafeRawBufferPointer(rebasing: d[cut...]))
                    #expect(mac.finish() == want, "\(secret) split at \(cut)")
                }
                var mac = HMACSHA256(key: secret)
                for k in 0..<d.count { mac.update(UnsafeRawBufferPointer(rebasing: d[k..<(k + 1)])) }
                #expect(mac.finish() == want)
            }
        }
    }

    /// A string against bytes (a bearer token against the header's bytes): equal only when
    /// every byte and the length match, the bytes a slice anywhere in its array.
    @Test func stringAgainstBytesInConstantTime() {
        let header = Array("Bearer benchtoken!".utf8)
        let token = header[7..<17]
        #expect(Digest.constantTimeEqual(bytes: "benchtoken".utf8, token))
        #expect(!Digest.constantTimeEqual(bytes: "benchtokem".utf8, token))
        #expect(!Digest.constantTimeEqual(bytes: "Benchtoken".utf8, token))
        #expect(!Digest.constantTimeEqual(bytes: "benchtoke".utf8, token))
        #expect(!Digest.constantTimeEqual(bytes: "benchtoken!".utf8, token))
        #expect(Digest.constantTimeEqual(bytes: "".utf8, header[0..<0]))
        #expect(!Digest.constantTimeEqual(bytes: "".utf8, token))
        #expect(Digest.constantTimeEqual(bytes: "tökén".utf8, Array("tökén".utf8)[...]))
        // Without contiguous storage (a lazy view): compared element by element, the same.
        #expect(Digest.constantTimeEqual(bytes: "benchtoken".utf8.lazy.map { $0 }, token))
        #expect(!Digest.constantTimeEqual(bytes: "benchtokem".utf8.lazy.map { $0 }, token))
        for cut in 0...header.count {
            let s = String(decoding: header[0..<cut], as: UTF8.self)
            #expect(Digest.constantTimeEqual(bytes: s.utf8, header[0..<cut]))
            #expect(Digest.constantTimeEqual(bytes: s.utf8, header[...]) == (cut == header.count))
        }
    }
}
