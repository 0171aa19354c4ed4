#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

/// Listening sockets and the socket options the hub sets.
public enum Socket {
    /// A non-blocking TCP listener on `host:port` (IPv4 or IPv6 literal, or "localhost").
    /// With `reusePort`, several listeners share one port and the kernel spreads new
    /// connections over them (one per event loop).
    public static func listen(host: String, port: Int, reusePort: Bool, backlog: Int32 = 1024) throws(IOError) -> Int32
    {
        let h = host == "localhost" ? "127.0.0.1" : host
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let isV6: Bool
        if inet_pton(AF_INET, h, &v4.sin_addr) == 1 {
            isV6 = false
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(port).bigEndian)
        } else if inet_pton(AF_INET6, h, &v6.sin6_addr) == 1 {
            isV6 = true
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port).bigEndian)
        } else {
            throw IOError(errno: EINVAL, function: "listen: not an IP address: \(host)")
        }
        let fd = socket(
            isV6 ? AF_INET6 : AF_INET,
            Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw IOError(errno: errno, function: "socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if reusePort {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let rc: Int32 =
            isV6
            ? withUnsafePointer(to: &v6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
            : withUnsafePointer(to: &v4) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        if rc != 0 {
            let e = errno
            Sys.close(fd)
            throw IOError(errno: e, function: "bind \(host):\(port)")
        }
        if Glibc.listen(fd, backlog) != 0 {
            let e = errno
            Sys.close(fd)
            throw IOError(errno: e, function: "listen")
        }
        return fd
    }

    /// The port a bound socket listens on (for port 0).
    public static func localPort(_ fd: Int32) -> Int {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        if ss.ss_family == sa_family_t(AF_INET6) {
            return withUnsafePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    Int(UInt16(bigEndian: $0.pointee.sin6_port))
                }
            }
        }
        return withUnsafePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }

    /// Accepts one connection, non-blocking and close-on-exec, with the peer's address (read
    /// by the same syscall); nil when none is waiting.
    public static func accept(_ listener: Int32) throws(IOError) -> (fd: Int32, peer: IPAddress)? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = try withUnsafeMutablePointer(to: &ss) { p throws(IOError) in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa throws(IOError) in
                try retrying("accept4", { Int(halley_accept4(listener, sa, &len)) })
            }
        }
        switch r {
        case .done(let fd):
            let peer = withUnsafeBytes(of: &ss) { IPAddress(sockaddr: $0.baseAddress!, length: Int(len)) }
            return (Int32(fd), peer ?? .unspecified)
        case .wouldBlock: return nil
        }
    }

    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Half-closes the sending side: the peer reads our last bytes, then EOF.
    public static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// Raises the open-file soft limit to the hard limit; returns the new soft limit.
    public static func raiseFileLimit() -> Int {
        var rl = rlimit()
        getrlimit(RLIMIT_NOFILE_VALUE, &rl)
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            setrlimit(RLIMIT_NOFILE_VALUE, &rl)
            getrlimit(RLIMIT_NOFILE_VALUE, &rl)
        }
        return Int(rl.rlim_cur)
    }
}

#if os(Linux)
private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#endif
