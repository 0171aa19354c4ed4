import Testing
@testable import HalleyHub

@Suite struct AppsFileTests {
    func parse(_ json: String) -> Result<[App], AppsFile.ParseError> {
        do throws(AppsFile.ParseError) {
            return .success(try AppsFile.parse(Array(json.utf8), file: "apps.json"))
        } catch {
            return .failure(error)
        }
    }

    func error(_ json: String) -> String {
        switch parse(json) {
        case .success: return "no error"
        case .failure(let e): return e.description
        }
    }

    @Test func minimalAppGetsTheDefaults() throws {
        let apps = try parse(#"{"apps":[{"id":"7","key":"k","secret":"s"}]}"#).get()
        #expect(apps == [App(id: "7", key: "k", secret: "s")])
        #expect(apps[0].clientEvents && apps[0].clientEventsPerSecond == 10 && apps[0].maxConnections == 0)
        #expect(
            apps[0].maxEventBytes == nil && apps[0].origins == nil && apps[0].webhooks.isEmpty && apps[0].token == nil)
    }

    @Test func everyField() throws {
        let apps = try parse(
            """
            {"apps": [
              {"id": 12, "key": "k1", "secret": "s1", "token": "t", "enabled": false, "client_events": false,
               "client_events_per_second": 3, "max_connections": 50, "max_event_bytes": 2048,
               "allowed_origins": ["https://a.example", "*.b.example"],
               "webhooks": [{"url": "http://127.0.0.1:9/h", "events": ["channel_occupied", "member_added"]},
                            {"url": "http://hooks.example/all"}]},
              {"id": "13", "key": "k2", "secret": "s2"}
            ]}
            """
        ).get()
        #expect(apps.count == 2)
        let a = apps[0]
        #expect(a.id == "12" && a.key == "k1" && a.secret == "s1" && a.token == "t")
        #expect(
            !a.enabled && !a.clientEvents && a.clientEventsPerSecond == 3 && a.maxConnections == 50
                && a.maxEventBytes == 2048)
        #expect(a.origins?.allowed == ["https://a.example", "*.b.example"])
        #expect(
            a.webhooks == [
                Webhook(url: "http://127.0.0.1:9/h", events: ["channel_occupied", "member_added"]),
                Webhook(url: "http://hooks.example/all"),
            ])
        #expect(a.webhooks[1].wants("client_event") && !a.webhooks[0].wants("client_event"))
        #expect(apps[1].id == "13")
    }

    @Test func fileLevelErrors() {
        #expect(error("") == "apps.json: invalid JSON at byte 0: unexpected end")
        #expect(error("[]") == #"apps.json: expected an object {"apps": [...]}"#)
        #expect(error("{}") == #"apps.json: missing "apps""#)
        #expect(error(#"{"apps":[],"app":1}"#) == #"apps.json: unknown field "app""#)
        #expect(error(#"{"apps":{}}"#) == "apps.json: apps: expected an array of apps")
        #expect(error(#"{"apps":[]}"#) == "apps.json: apps: expected at least one app")
        #expect(error(#"{"apps":[1]}"#) == "apps.json: apps[0]: expected an object")
    }

    @Test func appFieldErrors() {
        func second(_ fields: String) -> String {
            error(#"{"apps":[{"id":"1","key":"k","secret":"s"},{"# + fields + "}]}")
        }
        #expect(second(#""key":"k2","secret":"s""#) == #"apps.json: apps[1]: missing "id""#)
        #expect(second(#""id":"2","secret":"s""#) == #"apps.json: apps[1]: missing "key""#)
        #expect(second(#""id":"2","key":"k2""#) == #"apps.json: apps[1]: missing "secret""#)
        #expect(second(#""id":"x2","key":"k2","secret":"s""#) == #"apps.json: apps[1].id: expected digits, got "x2""#)
        #expect(second(#""id":1.5,"key":"k2","secret":"s""#) == #"apps.json: apps[1].id: expected digits, got "1.5""#)
        #expect(second(#""id":true,"key":"k2","secret":"s""#) == "apps.json: apps[1].id: expected digits, got true")
        #expect(
            second(#""id":"1","key":"k2","secret":"s""#) == #"apps.json: apps[1].id: duplicate id "1" (also apps[0])"#)
        #expect(
            second(#""id":"2","key":"k","secret":"s""#) == #"apps.json: apps[1].key: duplicate key "k" (also apps[0])"#)
        #expect(second(#""id":"2","key":"a/b","secret":"s""#) == "apps.json: apps[1].key: expected a key without '/'")
        #expect(second(#""id":"2","key":"","secret":"s""#) == "apps.json: apps[1].key: expected a non-empty string")
        #expect(second(#""id":"2","key":"k2","secret":5"#) == "apps.json: apps[1].secret: expected a string")
        #expect(
            second(#""id":"2","key":"k2","secret":"s","sekret":"x""#) == #"apps.json: apps[1]: unknown field "sekret""#)
        #expect(
            second(#""id":"2","key":"k2","secret":"s","enabled":"yes""#)
                == "apps.json: apps[1].enabled: expected true or false")
        #expect(
            second(#""id":"2","key":"k2","secret":"s","client_events_per_second":0"#)
                == "apps.json: apps[1].client_events_per_second: expected a whole number from 1 to 1073741824")
        #expect(
            second(#""id":"2","key":"k2","secret":"s","max_connections":-1"#)
                == "apps.json: apps[1].max_connections: expected a whole number from 0 to 1073741824")
        #expect(
            second(#""id":"2","key":"k2","secret":"s","max_event_bytes":"10""#)
                == "apps.json: apps[1].max_event_bytes: expected a whole number from 1 to 1073741824")
        #expect(
            second(#""id":"2","key":"k2","secret":"s","allowed_origins":"*""#)
                == "apps.json: apps[1].allowed_origins: expected an array of origins")
        #expect(
            second(#""id":"2","key":"k2","secret":"s","allowed_origins":[]"#)
                == #"apps.json: apps[1].allowed_origins: expected at least one origin ("*" for any)"#)
        #expect(
            second(#""id":"2","key":"k2","secret":"s","allowed_origins":["a",""]"#)
                == "apps.json: apps[1].allowed_origins[1]: expected a non-empty string")
    }

    @Test func webhookErrors() {
        func hook(_ w: String) -> String {
            error(#"{"apps":[{"id":"1","key":"k","secret":"s","webhooks":["# + w + "]}]}")
        }
        #expect(hook("") == "no error")
        #expect(
            hook(#""http://h/""#)
                == #"apps.json: apps[0].webhooks[0]: expected an object {"url": ..., "events": [...]}"#)
        #expect(hook(#"{"events":["client_event"]}"#) == #"apps.json: apps[0].webhooks[0]: missing "url""#)
        #expect(
            hook(#"{"url":"http://h/","secret":"x"}"#) == #"apps.json: apps[0].webhooks[0]: unknown field "secret""#)
        #expect(
            hook(#"{"url":"http://h/"},{"url":"https://h/"}"#)
                == "apps.json: apps[0].webhooks[1].url: https is not supported yet (no TLS client): use http://")
        #expect(hook(#"{"url":"h/x"}"#) == "apps.json: apps[0].webhooks[0].url: expected http://host[:port]/path")
        #expect(
            hook(#"{"url":"http://h/","events":[]}"#)
                == #"apps.json: apps[0].webhooks[0].events: expected at least one event name (leave "events" out for all)"#
        )
        #expect(
            hook(#"{"url":"http://h/","events":"client_event"}"#)
                == "apps.json: apps[0].webhooks[0].events: expected an array of event names")
        #expect(
            hook(#"{"url":"http://h/","events":["channel_occupied","channel_existence"]}"#)
                == #"apps.json: apps[0].webhooks[0].events[1]: unknown event "channel_existence" (expected one of channel_occupied, channel_vacated, client_event, member_added, member_removed)"#
        )
    }

    @Test func missingFile() {
        do throws(AppsFile.ParseError) {
            _ = try AppsFile.load("/nonexistent/apps.json")
            Issue.record("no error")
        } catch {
            #expect(error.description == "/nonexistent/apps.json: cannot read: No such file or directory")
        }
    }
}
