//! ringlog-net: protocol, server, client.
