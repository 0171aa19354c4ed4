/// Every limit the request parser enforces, in one place, each with its default and the
/// answer a client gets for breaking it.
public struct HTTPLimits: Sendable, Equatable {
    /// Longest request line (method, target, version) in bytes. Default 8 KiB, nginx's
    /// `large_client_header_buffers` size; longer: 414 URI Too Long.
    public var maxRequestLineBytes: Int = 8 * 1024
    /// Longest head (request line plus every header line) in bytes. Default 16 KiB; longer:
    /// 431 Request Header Fields Too Large.
    public var maxHeaderBytes: Int = 16 * 1024
    /// Most header fields in one request. Default 100; more: 431.
    public var maxHeaderCount: Int = 100
    /// Largest request body, by Content-Length or summed chunks. Default 1 MiB (a Pusher
    /// batch of 10 events of 10 KB fits many times over); larger: 413 Content Too Large.
    public var maxBodyBytes: Int = 1024 * 1024

    public init() {}
}
