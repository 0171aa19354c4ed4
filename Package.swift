// swift-tools-version:6.0
import PackageDescription

// Loop-confined objects (connections, sessions) are never accessed from two threads, so the
// runtime exclusivity checks on their `var` properties (swift_beginAccess: TLS lookups on
// every access, about 5% of a long-poll fan-out's CPU) buy nothing in the hot modules.
// Static exclusivity checking still applies.
// Debug builds (the tests) keep the checks, so a violation still traps there.
// Release builds of every Halley module also take -cross-module-optimization: a getter or a
// small function of another module is inlined instead of called (a configuration read from
// another module was a copy of the whole struct).
let hotPath: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))
]
let cmo: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]

// Halley has no package dependencies: the toolchain, Glibc, and the system's zlib and OpenSSL
// (Debian: zlib1g-dev, libssl-dev) through system-library targets.
let package = Package(
    name: "Halley",
    products: [
        .executable(name: "halley", targets: ["halley"]),
        .executable(name: "HalleyFuzzHTTP", targets: ["HalleyFuzzHTTP"]),
        .executable(name: "halley-load", targets: ["HalleyLoad"]),
        .executable(name: "HalleyFuzzWSFrames", targets: ["HalleyFuzzWSFrames"]),
        .executable(name: "HalleyFuzzInflate", targets: ["HalleyFuzzInflate"]),
        .executable(name: "HalleyFuzzJSON", targets: ["HalleyFuzzJSON"]),
        .executable(name: "HalleyFuzzSockJS", targets: ["HalleyFuzzSockJS"]),
        .executable(name: "HalleyFuzzAPI", targets: ["HalleyFuzzAPI"]),
        .executable(name: "HalleyFuzzAppsFile", targets: ["HalleyFuzzAppsFile"]),
        .executable(name: "HalleyFuzzRESP", targets: ["HalleyFuzzRESP"]),
    ],
    targets: [
        // System shims.
        .systemLibrary(
            name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(
            name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CHalleyLinux", path: "Sources/CHalleyLinux"),

        // core: byte buffers, shared bytes, locks, clock, log, UTF-8, base64. Imports Glibc only.
        // hotPath: a ByteBuffer is confined to its loop and a Locked's value to its lock holder;
        // their fields' runtime exclusivity checks were 3% of a publish request's CPU.
        .target(name: "HalleyCore", swiftSettings: hotPath),
        // SHA-1, MD5, HMAC-SHA256 from OpenSSL.
        .target(name: "HalleyCrypto", dependencies: ["COpenSSL"], swiftSettings: cmo),
        // HTTP/1.1 request and response parsers, limits, dates: no sockets.
        .target(name: "HalleyHTTP", dependencies: ["HalleyCore"], swiftSettings: cmo),
        // WebSocket handshake, frames, permessage-deflate: no sockets.
        .target(name: "HalleyWebSocket", dependencies: ["HalleyCore", "HalleyCrypto", "CZlib"], swiftSettings: cmo),
        // epoll event loops, sockets, listeners, timers.
        .target(name: "HalleyLoop", dependencies: ["HalleyCore", "CHalleyLinux"], swiftSettings: cmo),
        // HTTP server: connections, router, static files, metrics.
        .target(
            name: "HalleyServer",
            dependencies: ["HalleyCore", "HalleyHTTP", "HalleyWebSocket", "HalleyLoop", "COpenSSL"],
            swiftSettings: hotPath),
        // Pusher protocol messages, JSON, channel names, signatures, SSE and poll encodings:
        // no sockets, no loops.
        .target(name: "HalleyProtocol", dependencies: ["HalleyCore", "HalleyCrypto"], swiftSettings: cmo),
        // The hub's domain: apps, channels (offsets, history), sessions, fan-out, presence,
        // webhooks. Knows nothing of HTTP requests (HalleyEndpoints calls it).
        .target(
            name: "HalleyHub",
            dependencies: [
                "HalleyCore", "HalleyCrypto", "HalleyProtocol", "HalleyServer", "HalleyLoop", "HalleyHTTP",
                "HalleyWebSocket",
            ],
            swiftSettings: hotPath),
        // The HTTP layer over the hub: the Pusher WebSocket path, SSE, long-polling, sending over
        // HTTP, pusher-js's HTTP fallbacks, POST /publish, the HTTP API, /stats; the transports.
        .target(
            name: "HalleyEndpoints",
            dependencies: [
                "HalleyCore", "HalleyCrypto", "HalleyProtocol", "HalleyServer", "HalleyLoop", "HalleyHTTP",
                "HalleyWebSocket", "HalleyHub",
            ],
            swiftSettings: hotPath),
        // The executable: configuration, wiring, signals, logs.
        .executableTarget(
            name: "halley", dependencies: ["HalleyServer", "HalleyHub", "HalleyEndpoints"], swiftSettings: cmo),
        // libFuzzer entry for the request parser (built with --sanitize=fuzzer).
        .executableTarget(name: "HalleyFuzzHTTP", dependencies: ["HalleyHTTP"]),
        // The load generator of Scripts/bench (WebSocket echo, TLS handshakes, fan-out over
        // WebSocket, long-poll and xhr_streaming): one thread, epoll, no Foundation; independent
        // of the server's modules (only the system shims).
        .executableTarget(name: "HalleyLoad", dependencies: ["CHalleyLinux", "CZlib", "COpenSSL"]),
        // libFuzzer entries for the WebSocket frame reader and for inflate.
        .executableTarget(name: "HalleyFuzzWSFrames", dependencies: ["HalleyWebSocket"]),
        .executableTarget(name: "HalleyFuzzInflate", dependencies: ["HalleyWebSocket"]),
        // libFuzzer entry for the JSON parser and Pusher client messages.
        .executableTarget(name: "HalleyFuzzJSON", dependencies: ["HalleyProtocol"]),
        // libFuzzer entries for pusher-js's SockJS frames and xhr_send bodies, the HTTP API's
        // query and signature, and the apps file.
        .executableTarget(name: "HalleyFuzzSockJS", dependencies: ["HalleyProtocol"]),
        .executableTarget(name: "HalleyFuzzAPI", dependencies: ["HalleyProtocol", "HalleyCrypto"]),
        .executableTarget(name: "HalleyFuzzAppsFile", dependencies: ["HalleyHub"]),
        // libFuzzer entry for the RESP parser (replies and pushes of a Redis server).
        .executableTarget(name: "HalleyFuzzRESP", dependencies: ["HalleyProtocol"]),

        .testTarget(name: "HalleyHTTPTests", dependencies: ["HalleyHTTP"]),
        .testTarget(name: "HalleyServerTests", dependencies: ["HalleyServer", "HalleyLoop", "HalleyCore", "COpenSSL"]),
        .testTarget(name: "HalleyWebSocketTests", dependencies: ["HalleyWebSocket", "HalleyCrypto"]),
        .testTarget(name: "HalleyProtocolTests", dependencies: ["HalleyProtocol", "HalleyCore"]),
        .testTarget(
            name: "HalleyHubTests",
            dependencies: ["HalleyHub", "HalleyEndpoints", "HalleyProtocol", "HalleyLoop", "HalleyCore"]),
    ]
)
