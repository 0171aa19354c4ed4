extension HTTPRequestParser {
    /// Limit on chunk-extension bytes per chunk line; they carry nothing the hub uses.
    static let maxChunkExtensionBytes = 1024

    /// RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF chunk-data CRLF ... last-chunk
    /// trailer-section CRLF. Consumes every byte it is given: a partial size line is kept as
    /// state, so the caller never has to hold body bytes back.
    mutating func parseChunked(_ buf: UnsafeRawBufferPointer) -> Result {
        var i = 0
        while i < buf.count {
            let c = buf[i]
            switch state {
            case .chunkSize:
                if let v = HTTPChars.hexValue(c) {
                    if chunkSize > (limits.maxBodyBytes - bodyBytes) { return fail(.contentTooLarge) }
                    chunkSize = chunkSize * 16 + Int(v)
                    chunkDigits += 1
                } else if chunkDigits == 0 {
                    return fail(.badRequest("bad chunk size"))
                } else if c == 13 {
                    state = .chunkSizeLF
                } else if c == 59 {
                    state = .chunkExtension
                } else if c == 32 || c == 9 {
                    state = .chunkSizeSpace
                } else {
                    return fail(.badRequest(c == 10 ? "bare LF" : "bad chunk size"))
                }
            case .chunkSizeSpace:
                if c == 59 {
                    state = .chunkExtension
                } else if c == 13 {
                    state = .chunkSizeLF
                } else if c != 32 && c != 9 {
                    return fail(.badRequest("bad chunk size"))
                }
            case .chunkExtension:
                if c == 13 {
                    state = .chunkSizeLF
                } else if c == 10 {
                    return fail(.badRequest("bare LF"))
                } else if !HTTPChars.isFieldValue(c) {
                    return fail(.badRequest("bad chunk extension"))
                } else {
                    extensionBytes += 1
                    if extensionBytes > Self.maxChunkExtensionBytes {
                        return fail(.badRequest("chunk extension too long"))
                    }
                }
            case .chunkSizeLF:
                guard c == 10 else { return fail(.badRequest("bare CR")) }
                extensionBytes = 0
                if chunkSize == 0 {
                    trailerBytes = 0
                    state = .trailerLineStart
                } else {
                    if chunkSize > limits.maxBodyBytes - bodyBytes { return fail(.contentTooLarge) }
                    state = .chunkData(remaining: chunkSize)
                }
            case .chunkData(let remaining):
                let n = min(remaining, buf.count - i)
                bodyBytes += n
                state = n == remaining ? .chunkDataCR : .chunkData(remaining: remaining - n)
                return .body(i..<(i + n), consumed: i + n)
            case .chunkDataCR:
                guard c == 13 else { return fail(.badRequest("missing CRLF after chunk data")) }
                state = .chunkDataLF
            case .chunkDataLF:
                guard c == 10 else { return fail(.badRequest("missing CRLF after chunk data")) }
                chunkSize = 0
                chunkDigits = 0
                state = .chunkSize
            case .trailerLineStart:
                if c == 13 {
                    state = .trailerEndLF
                } else if c == 10 {
                    return fail(.badRequest("bare LF"))
                } else if c == 32 || c == 9 {
                    return fail(.badRequest("obsolete line folding"))
                } else {
                    state = .trailerLine; trailerBytes += 1
                }
            case .trailerLine:
                if c == 13 {
                    state = .trailerLineLF
                } else if c == 10 {
                    return fail(.badRequest("bare LF"))
                } else if c != 9 && (c < 32 || c == 127) {
                    return fail(.badRequest("bad character in trailer"))
                } else {
                    trailerBytes += 1
                    if trailerBytes > limits.maxHeaderBytes { return fail(.headersTooLarge) }
                }
            case .trailerLineLF:
                guard c == 10 else { return fail(.badRequest("bare CR")) }
                state = .trailerLineStart
            case .trailerEndLF:
                guard c == 10 else { return fail(.badRequest("bare CR")) }
                state = .head
                return .end(consumed: i + 1)
            default:
                preconditionFailure("parseChunked outside a chunked body")
            }
            i += 1
        }
        return .needMore(consumed: i)
    }
}
