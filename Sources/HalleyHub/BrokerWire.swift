/// A published message as nodes pass it through Redis: no I/O here, bytes in and values out.
///
/// The publishing node writes the *body*:
///
///     <app>\n<channel>\n<excluded socket id, or empty>\n<prefix length> <header length>\n
///     <prefix><binary header><binary payload>
///
/// (`prefix`: the message's JSON without its offset field and closing brace, as `Wire` makes it;
/// the binary header and payload only for a binary message). Redis's `halley_publish` function
/// stores the body in the channel's stream under the id `<offset>-1` and publishes
/// `<epoch> <offset>\n<body>` to every node.
package enum BrokerWire {
    package struct Message: Equatable, Sendable {
        package var key: ChannelKey
        package var exclude: SessionID?
        package var prefix: [UInt8]
        package var binaryHeader: [UInt8]?
        package var binaryPayload: [UInt8]?
        /// Set by Redis (zero and empty in a body not yet published).
        package var epoch = ""
        package var offset: UInt64 = 0

        package init(
            key: ChannelKey, exclude: SessionID?, prefix: [UInt8], binaryHeader: [UInt8]? = nil,
            binaryPayload: [UInt8]? = nil
        ) {
            self.key = key
            self.exclude = exclude
            self.prefix = prefix
            self.binaryHeader = binaryHeader
            self.binaryPayload = binaryPayload
        }
    }

    package static func body(_ m: Message) -> [UInt8] {
        let header = m.binaryHeader ?? []
        var out: [UInt8] = []
        out.reserveCapacity(m.prefix.count + header.count + (m.binaryPayload?.count ?? 0) + 64)
        out += m.key.app.utf8
        out.append(0x0A)
        out += m.key.name.utf8
        out.append(0x0A)
        if let x = m.exclude { out += x.description.utf8 }
        out.append(0x0A)
        out += String(m.prefix.count).utf8
        out.append(0x20)
        // A binary message always has a header ('{' at least): length 0 means text.
        out += String(header.count).utf8
        out.append(0x0A)
        out += m.prefix
        out += header
        if let b = m.binaryPayload { out += b }
        return out
    }

    package enum DecodeError: Error, Equatable {
        case malformed(String)
    }

    /// Reads a body (from a stream entry, whose id gives `offset`; `epoch` is the stream's).
    package static func decodeBody(_ b: [UInt8], epoch: String, offset: UInt64) throws(DecodeError) -> Message {
        var i = 0
        func line(_ what: String) throws(DecodeError) -> ArraySlice<UInt8> {
            guard let nl = b[i...].firstIndex(of: 0x0A) else { throw .malformed("no \(what)") }
            let l = b[i..<nl]
            i = nl + 1
            return l
        }
        let app = try line("app")
        let name = try line("channel")
        guard !app.isEmpty, !name.isEmpty else { throw .malformed("empty app or channel") }
        let x = try line("excluded socket id")
        var exclude: SessionID? = nil
        if !x.isEmpty {
            guard let id = SessionID(String(decoding: x, as: UTF8.self)) else { throw .malformed("bad socket id") }
            exclude = id
        }
        let lengths = try line("lengths")
        guard let sp = lengths.firstIndex(of: 0x20),
            let pl = Int(String(decoding: lengths[lengths.startIndex..<sp], as: UTF8.self)),
            let hl = Int(String(decoding: lengths[(sp + 1)...], as: UTF8.self)),
            pl >= 0, hl >= 0, pl <= b.count - i, hl <= b.count - i - pl
        else { throw .malformed("bad lengths") }
        var m = Message(
            key: ChannelKey(app: String(decoding: app, as: UTF8.self), name: String(decoding: name, as: UTF8.self)),
            exclude: exclude, prefix: Array(b[i..<(i + pl)]))
        if hl > 0 {
            m.binaryHeader = Array(b[(i + pl)..<(i + pl + hl)])
            m.binaryPayload = Array(b[(i + pl + hl)...])
        } else if i + pl != b.count {
            throw .malformed("bytes after a text message")
        }
        m.epoch = epoch
        m.offset = offset
        return m
    }

    /// Reads what a node receives: `<epoch> <offset>\n<body>`; `- 0` for a presence member
    /// event (unnumbered: offset 0, epoch `-`).
    package static func decode(_ b: [UInt8]) throws(DecodeError) -> Message {
        guard let nl = b.firstIndex(of: 0x0A), let sp = b[..<nl].firstIndex(of: 0x20) else {
            throw .malformed("no epoch and offset")
        }
        let epoch = b[..<sp]
        guard !epoch.isEmpty, let off = UInt64(String(decoding: b[(sp + 1)..<nl], as: UTF8.self)),
            off > 0 || Array(epoch) == [UInt8(ascii: "-")]
        else {
            throw .malformed("bad epoch or offset")
        }
        return try decodeBody(Array(b[(nl + 1)...]), epoch: String(decoding: epoch, as: UTF8.self), offset: off)
    }

    /// The Redis function library (`FUNCTION LOAD REPLACE`). Keys: the channel's meta hash
    /// (`e` epoch, `o` last offset) and its stream; every key of a channel and the pub/sub
    /// channel its messages go to share one hash tag, so that with Redis Cluster they live on
    /// one master (`SPUBLISH` must go to the slot of the keys the function touches).
    ///
    /// `halley_publish meta stream | epoch-candidate history-size ttl-ms body pubsub-channel`:
    /// creates the epoch when the channel has none (and drops a stream of an older one), takes
    /// the next offset, adds the body to the stream (when history-size > 0), publishes, and
    /// answers `[offset, epoch]`. `halley_meta meta stream | epoch-candidate ttl-ms` answers
    /// `[epoch, last offset]`, creating the epoch the same way. `halley_beat node-key | address
    /// ttl-ms` sets a node's key to its address when it is free or already the node's (1), and
    /// leaves another node's alone (0).
    package static let library = """
        #!lua name=halley
        local function epoch(meta, stream, candidate, ttl)
          if redis.call('HSETNX', meta, 'e', candidate) == 1 then
            redis.call('DEL', stream)
            redis.call('PEXPIRE', meta, ttl)
          end
          return redis.call('HGET', meta, 'e')
        end
        local function publish(keys, args)
          local e = epoch(keys[1], keys[2], args[1], args[3])
          local off = redis.call('HINCRBY', keys[1], 'o', 1)
          redis.call('PEXPIRE', keys[1], args[3])
          if tonumber(args[2]) > 0 then
            redis.call('XADD', keys[2], 'MAXLEN', '~', args[2], off .. '-1', 'm', args[4])
            redis.call('PEXPIRE', keys[2], args[3])
          end
          redis.call('SPUBLISH', args[5], e .. ' ' .. off .. '\\n' .. args[4])
          return {off, e}
        end
        local function meta(keys, args)
          local e = epoch(keys[1], keys[2], args[1], args[2])
          return {e, tonumber(redis.call('HGET', keys[1], 'o') or '0')}
        end
        local function beat(keys, args)
          local v = redis.call('GET', keys[1])
          if v == false or v == args[1] then
            redis.call('SET', keys[1], args[1], 'PX', args[2])
            return 1
          end
          return 0
        end
        local function event(name, channel, data)
          return '{"event":"' .. name .. '","channel":' .. cjson.encode(channel) .. ',"data":' .. cjson.encode(data)
        end
        local function announce(pubsub, app, channel, exclude, prefix)
          redis.call('SPUBLISH', pubsub, '- 0\\n' .. app .. '\\n' .. channel .. '\\n' .. exclude .. '\\n' .. #prefix .. ' 0\\n' .. prefix)
        end
        local function join(keys, args)
          local field, user, info, max = args[1], args[2], args[3], tonumber(args[4])
          if redis.call('HEXISTS', keys[1], field) == 1 then return {0, redis.call('HVALS', keys[1])} end
          if redis.call('HEXISTS', keys[2], user) == 0 and redis.call('HLEN', keys[2]) >= max then
            return {-1, {}}
          end
          redis.call('HSET', keys[1], field, user .. '\\n' .. info)
          local first = 0
          if redis.call('HINCRBY', keys[2], user, 1) == 1 then
            first = 1
            local data = '{"user_id":' .. cjson.encode(user) .. ',"user_info":' .. info .. '}'
            announce(args[7], args[5], args[6], args[8], event('pusher_internal:member_added', args[6], data))
          end
          return {first, redis.call('HVALS', keys[1])}
        end
        local function leave(keys, args)
          local v = redis.call('HGET', keys[1], args[1])
          if not v then return {0, ''} end
          redis.call('HDEL', keys[1], args[1])
          local user = string.sub(v, 1, string.find(v, '\\n', 1, true) - 1)
          if redis.call('HINCRBY', keys[2], user, -1) > 0 then return {0, user} end
          redis.call('HDEL', keys[2], user)
          local data = '{"user_id":' .. cjson.encode(user) .. '}'
          announce(args[4], args[2], args[3], args[5], event('pusher_internal:member_removed', args[3], data))
          return {1, user}
        end
        local function total(n)
          local t = 0
          for _, v in ipairs(redis.call('HVALS', n)) do t = t + tonumber(v) end
          return t
        end
        local function occupy(keys, args)
          local d = tonumber(args[2])
          local before = total(keys[1])
          if redis.call('HINCRBY', keys[1], args[1], d) <= 0 then redis.call('HDEL', keys[1], args[1]) end
          local after = before + d
          if before <= 0 and after > 0 then
            redis.call('SADD', keys[2], args[3])
            return 1
          end
          if before > 0 and after <= 0 then
            redis.call('SREM', keys[2], args[3])
            return -1
          end
          return 0
        end
        local function evict(keys, args)
          local v = tonumber(redis.call('HGET', keys[1], args[1]) or '0')
          if v == 0 then return 0 end
          redis.call('HDEL', keys[1], args[1])
          if total(keys[1]) <= 0 then
            redis.call('SREM', keys[2], args[2])
            return -1
          end
          return 0
        end
        redis.register_function('halley_occupy', occupy)
        redis.register_function('halley_evict', evict)
        redis.register_function('halley_join', join)
        redis.register_function('halley_leave', leave)
        redis.register_function('halley_publish', publish)
        redis.register_function('halley_beat', beat)
        redis.register_function('halley_meta', meta)
        """

    /// Channels spread over this many pub/sub channels (and hash tags): every node subscribes
    /// to all of them; with Redis Cluster they spread over the masters.
    package static let shardCount = 64

    /// A stable hash (FNV-1a; `Hasher` is seeded per process and nodes must agree).
    package static func shard(_ key: ChannelKey) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for c in key.app.utf8 {
            h = (h ^ UInt64(c)) &* 0x100_0000_01b3
        }
        h = (h ^ 0x0A) &* 0x100_0000_01b3
        for c in key.name.utf8 {
            h = (h ^ UInt64(c)) &* 0x100_0000_01b3
        }
        return Int(h % UInt64(shardCount))
    }

    /// The pub/sub channel of shard `n` (its hash tag is the shard's).
    package static func pubsubChannel(_ n: Int) -> [UInt8] { Array("h:{\(n)}".utf8) }

    /// The shard of a pub/sub channel's name (`h:{n}`), nil for any other name.
    package static func shardOfPubsubChannel(_ name: String) -> Int? {
        let digits = name.dropFirst(3).dropLast()
        guard name.hasPrefix("h:{"), name.hasSuffix("}"), !digits.isEmpty, digits.allSatisfy(\.isASCII),
            digits.allSatisfy(\.isNumber), let n = Int(digits), (0..<shardCount).contains(n)
        else { return nil }
        return n
    }

    /// The channel's meta hash and stream (channel names have no ':', so the keys are unique).
    package static func keys(_ key: ChannelKey) -> (meta: [UInt8], stream: [UInt8], pubsub: [UInt8]) {
        let n = shard(key)
        let base = "h:{\(n)}:\(key.app):\(key.name)"
        return (Array((base + ":m").utf8), Array((base + ":s").utf8), pubsubChannel(n))
    }

    /// A channel's subscriptions per node (node number → count) and the occupied channels of
    /// its app in its shard.
    package static func occupancyKeys(_ key: ChannelKey) -> (counts: [UInt8], occupied: [UInt8]) {
        let n = shard(key)
        return (Array("h:{\(n)}:\(key.app):\(key.name):n".utf8), occupiedKey(app: key.app, shard: n))
    }

    package static func occupiedKey(app: String, shard n: Int) -> [UInt8] { Array("h:{\(n)}:\(app):channels".utf8) }

    /// A presence channel's roster (`<node>|<session>` → `<user>\n<user_info>`) and user counts
    /// (user → sessions in the cluster).
    package static func presenceKeys(_ key: ChannelKey) -> (roster: [UInt8], users: [UInt8]) {
        let base = "h:{\(shard(key))}:\(key.app):\(key.name)"
        return (Array((base + ":p").utf8), Array((base + ":u").utf8))
    }
}
