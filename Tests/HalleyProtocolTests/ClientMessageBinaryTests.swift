import Testing
@testable import HalleyProtocol

/// halley.js sends binary client events as base64 with `"halley:binary": true`.
@Suite struct ClientMessageBinaryTests {
    @Test func readsTheBinaryFlag() throws {
        let text = #"{"event":"client-bytes","channel":"private-x","data":"AAEC/w==","halley:binary":true}"#
        let m = try Array(text.utf8).withUnsafeBytes { try ClientMessage.decode($0) }
        #expect(m.binary)
        #expect(m.data == .string("AAEC/w=="))
    }

    @Test func onlyTrueCounts() throws {
        for flag in ["false", "1", "\"true\"", "null"] {
            let text = #"{"event":"client-x","channel":"private-x","data":"e30=","halley:binary":"# + flag + "}"
            let m = try Array(text.utf8).withUnsafeBytes { try ClientMessage.decode($0) }
            #expect(!m.binary, "halley:binary \(flag)")
        }
        let plain = try Array(#"{"event":"client-x","data":"hi"}"#.utf8).withUnsafeBytes {
            try ClientMessage.decode($0)
        }
        #expect(!plain.binary)
    }
}
