// The uWebSockets peer of Scripts/bench/matrix.sh: a small server of our own on uWebSockets
// (built from its public sources by build.sh, in a temporary folder, for measurement only).
// Its URLs are Nchan's (nchan/nginx.conf.in), so that halley-load's `--server nchan` drives it:
//   ws  /echo          every message back, same opcode
//   ws  /sub/TOPIC     subscribed to TOPIC from the open
//   POST /pub/TOPIC    the body to TOPIC's subscribers as one text message; 201 `{}`
//   POST /publish/TOPIC  the same, and with a token argument `Authorization: Bearer TOKEN` is
//                      required (401 without), as halley's POST /publish does
// usage: uws-server PORT [TOKEN]   (PORT 0: any free port; prints "listening on PORT")
// One thread, like halley --threads 1 and nginx with one worker. No idle timeout, no automatic
// pings, compression off (as in halley-load's runs: no permessage-deflate offered).
#include "App.h"
#include <cstdio>
#include <cstdlib>
#include <string>

struct Socket {
    std::string topic;
};

int main(int argc, char **argv) {
    int port = argc > 1 ? std::atoi(argv[1]) : 0;
    std::string bearer = argc > 2 ? std::string("Bearer ") + argv[2] : std::string();
    uWS::App app;
    uWS::App::WebSocketBehavior<Socket> echo{};
    echo.compression = uWS::DISABLED;
    echo.maxPayloadLength = 16 * 1024 * 1024;
    echo.idleTimeout = 0;
    echo.maxBackpressure = 16 * 1024 * 1024;
    echo.sendPingsAutomatically = false;
    echo.message = [](auto *ws, std::string_view message, uWS::OpCode op) { ws->send(message, op); };
    app.ws<Socket>("/echo", std::move(echo));

    uWS::App::WebSocketBehavior<Socket> sub{};
    sub.compression = uWS::DISABLED;
    sub.maxPayloadLength = 64 * 1024;
    sub.idleTimeout = 0;
    sub.maxBackpressure = 16 * 1024 * 1024;
    sub.sendPingsAutomatically = false;
    sub.upgrade = [](auto *res, auto *req, auto *context) {
        res->template upgrade<Socket>({std::string(req->getParameter(0))}, req->getHeader("sec-websocket-key"),
                                      req->getHeader("sec-websocket-protocol"),
                                      req->getHeader("sec-websocket-extensions"), context);
    };
    sub.open = [](auto *ws) { ws->subscribe(ws->getUserData()->topic); };
    app.ws<Socket>("/sub/:topic", std::move(sub));

    auto publish = [&app, &bearer](bool checked, auto *res, auto *req) {
        if (checked && !bearer.empty() && req->getHeader("authorization") != bearer) {
            res->writeStatus("401 Unauthorized")->end("no or wrong bearer token\n");
            return;
        }
        res->onAborted([]() {});
        res->onData([res, &app, topic = std::string(req->getParameter(0)), body = std::string()](
                        std::string_view chunk, bool last) mutable {
            body.append(chunk);
            if (!last) return;
            app.publish(topic, body, uWS::OpCode::TEXT);
            res->writeStatus("201 Created")->end("{}");
        });
    };
    app.post("/pub/:topic", [publish](auto *res, auto *req) { publish(false, res, req); });
    app.post("/publish/:topic", [publish](auto *res, auto *req) { publish(true, res, req); });
    // GET /pub/TOPIC answers, as Nchan's does (a probe by hand: curl .../pub/probe).
    app.get("/pub/:topic", [](auto *res, auto *) { res->end("ok"); });

    app.listen("127.0.0.1", port, [](auto *listen) {
        if (!listen) {
            std::fprintf(stderr, "cannot listen\n");
            std::exit(1);
        }
        std::printf("listening on %d\n", us_socket_local_port(0, (struct us_socket_t *)listen));
        std::fflush(stdout);
    });
    app.run();
    return 0;
}
