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
}
