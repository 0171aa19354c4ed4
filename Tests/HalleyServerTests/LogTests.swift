import HalleyCore
import Testing

@Suite struct LogTests {
    @Test func jsonEscapedQuotesBackslashesAndControlCharacters() {
        #expect(Log.jsonEscaped("plain é ✓") == "plain é ✓")
        #expect(Log.jsonEscaped("a \"b\" \\ c") == "a \\\"b\\\" \\\\ c")
        #expect(Log.jsonEscaped("l1\nl2\r\t") == "l1\\nl2\\r\\t")
        #expect(Log.jsonEscaped("\u{0}\u{1f}\u{7f}") == "\\u0000\\u001f\\u007f")
    }
}
