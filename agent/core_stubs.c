/*
 * What netaddr.c refers to from the relay core (core.c) that the agent never reaches:
 * rl_listen_tcp, next to rl_parse_addr in netaddr.c, names the listeners' error callback.
 * The agent opens no listener; this weak stand-in lets librelayagent.a link without
 * --gc-sections (the library localizes it with every other internal symbol).
 */
struct evconnlistener;
__attribute__((weak)) void rl_listener_error(struct evconnlistener *lev, void *arg) {
    (void)lev;
    (void)arg;
}
