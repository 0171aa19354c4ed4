import Testing

@testable import HalleyEndpoints

@Suite struct BearerTokenTests {
    func token(_ header: String) -> [UInt8]? { HubEndpoints.bearerToken(ArraySlice(header.utf8)).map { Array($0) } }

    @Test func takesTheSchemeInAnyCaseAndTrimsTheToken() {
        #expect(token("Bearer tok") == Array("tok".utf8))
        #expect(token("bEaReR tok") == Array("tok".utf8))
        #expect(token("BEARER \t tok \t ") == Array("tok".utf8))
        #expect(token("Bearer to k") == Array("to k".utf8))
        #expect(token("Bearer ") == [])
        #expect(token("Bearer  \t") == [])
        // Compared as bytes: a combining mark after the space is the token's.
        #expect(token("Bearer \u{301}tok") == Array("\u{301}tok".utf8))
    }

    @Test func refusesAnotherScheme() {
        for h in [
            "Bearer", "Bear", "", "Basic tok", "Bearer\ttok", "Bearertok", "Bearer\u{0}tok", "Béarer tok",
            "xBearer tok",
        ] {
            #expect(token(h) == nil, "\(h)")
        }
    }
}
