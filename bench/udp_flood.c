/*
 * The load generator of the queue benchmarks: small UDP datagrams, each one a new flow.
 *
 * Sends IPv4/UDP packets through a raw socket (the addresses are written here, so a pupil
 * host can speak for many clients): packet i comes from the address --source-net + 10 + i % sources (so a /24
 * keeps its .1 and .2 for the hosts on the link) and from port 1024 + (i / sources) % 64512, so every packet starts a new
 * conntrack entry and the filter must queue every one. The kernel's queue balancing hashes
 * addresses, so several source addresses spread the flows over several queues. Each payload
 * starts with the packet's 64-bit index, which latency measurements match on both sides of
 * the gateway. Built by the benchmark at run time (bench/labbench.py); never committed as
 * a binary.
 *
 * usage: udp_flood --destination A.B.C.D --source-net A.B.C.D [--sources 64] [--port 9]
 *                  [--payload 18] [--first 0] [--count N] [--seconds S] [--rate PPS]
 *                  [--batch 64]
 * --payload 18 makes 64-byte Ethernet frames (14 + 20 + 8 + 18 + 4 FCS). --rate 0 sends as
 * fast as it can. Stops after --count packets or --seconds, whichever comes first (at least
 * one of them is required), then prints one JSON line of counters.
 */
#define _GNU_SOURCE /* sendmmsg */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 256
#define MAX_PAYLOAD 1400
#define FIRST_PORT 1024
#define PORT_SPAN (65536 - FIRST_PORT)

static double monotonic_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec + now.tv_nsec * 1e-9;
}

static void fail(const char *what)
{
	fprintf(stderr, "udp_flood: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fill_packet(uint8_t *packet, size_t length, uint64_t index, uint32_t source_base,
			uint32_t sources, uint32_t destination, uint16_t port)
{
	struct iphdr *ip = (struct iphdr *)packet;
	struct udphdr *udp = (struct udphdr *)(packet + sizeof(*ip));
	uint8_t *payload = packet + sizeof(*ip) + sizeof(*udp);

	memset(packet, 0, sizeof(*ip) + sizeof(*udp));
	ip->version = 4;
	ip->ihl = 5;
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->tot_len = htons(length);
	ip->frag_off = htons(IP_DF);
	ip->saddr = htonl(source_base + (uint32_t)(index % sources));
	ip->daddr = destination;
	/* tot_len and the checksum are filled in by the kernel for IP_HDRINCL sockets */
	udp->source = htons(FIRST_PORT + (uint16_t)((index / sources) % PORT_SPAN));
	udp->dest = htons(port);
	udp->len = htons(length - sizeof(*ip));
	udp->check = 0; /* no UDP checksum: allowed over IPv4 (RFC 768) */
	if (length - sizeof(*ip) - sizeof(*udp) >= sizeof(index))
		memcpy(payload, &index, sizeof(index));
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "destination", required_argument, NULL, 'd' },
		{ "source-net", required_argument, NULL, 'n' },
		{ "sources", required_argument, NULL, 'S' },
		{ "port", required_argument, NULL, 'p' },
		{ "payload", required_argument, NULL, 'l' },
		{ "first", required_argument, NULL, 'f' },
		{ "count", required_argument, NULL, 'c' },
		{ "seconds", required_argument, NULL, 's' },
		{ "rate", required_argument, NULL, 'r' },
		{ "batch", required_argument, NULL, 'b' },
		{ NULL, 0, NULL, 0 },
	};
	struct in_addr destination = { 0 }, source_net = { 0 };
	long sources = 64, port = 9, payload = 18, batch = 64;
	unsigned long long first = 0, count = 0, sent = 0, errors = 0;
	double seconds = 0, rate = 0, started, deadline, elapsed;
	static uint8_t packets[MAX_BATCH][sizeof(struct iphdr) + sizeof(struct udphdr) + MAX_PAYLOAD];
	static struct iovec slots[MAX_BATCH];
	static struct mmsghdr messages[MAX_BATCH];
	struct sockaddr_in target = { .sin_family = AF_INET };
	size_t length;
	int fd, option, i;

	while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (option) {
		case 'd':
			if (inet_pton(AF_INET, optarg, &destination) != 1)
				return 2;
			break;
		case 'n':
			if (inet_pton(AF_INET, optarg, &source_net) != 1)
				return 2;
			break;
		case 'S': sources = strtol(optarg, NULL, 0); break;
		case 'p': port = strtol(optarg, NULL, 0); break;
		case 'l': payload = strtol(optarg, NULL, 0); break;
		case 'f': first = strtoull(optarg, NULL, 0); break;
		case 'c': count = strtoull(optarg, NULL, 0); break;
		case 's': seconds = strtod(optarg, NULL); break;
		case 'r': rate = strtod(optarg, NULL); break;
		case 'b': batch = strtol(optarg, NULL, 0); break;
		default: return 2;
		}
	}
	if (!destination.s_addr || !source_net.s_addr || sources < 1 || sources > 240 || port < 1 ||
	    port > 65535 || payload < 8 || payload > MAX_PAYLOAD || batch < 1 || batch > MAX_BATCH ||
	    (count == 0 && seconds <= 0) || rate < 0) {
		fprintf(stderr, "udp_flood: --destination, --source-net and --count or --seconds are "
				"required; see the header\n");
		return 2;
	}
	length = sizeof(struct iphdr) + sizeof(struct udphdr) + payload;
	target.sin_addr = destination;

	fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (fd < 0)
		fail("raw socket");
	for (i = 0; i < batch; i++) {
		slots[i].iov_base = packets[i];
		slots[i].iov_len = length;
		messages[i].msg_hdr.msg_iov = &slots[i];
		messages[i].msg_hdr.msg_iovlen = 1;
		messages[i].msg_hdr.msg_name = &target;
		messages[i].msg_hdr.msg_namelen = sizeof(target);
	}

	started = monotonic_seconds();
	deadline = seconds > 0 ? started + seconds : 0;
	while ((count == 0 || sent < count) && (deadline == 0 || monotonic_seconds() < deadline)) {
		int wanted = batch, done;

		if (count && count - sent < (unsigned long long)wanted)
			wanted = (int)(count - sent);
		if (rate > 0) {
			/* paced: wait until this batch is due, sleeping when it is far off */
			double due = started + (double)sent / rate, now;

			while ((now = monotonic_seconds()) < due) {
				if (due - now > 200e-6)
					usleep((useconds_t)((due - now) * 1e6 / 2));
			}
		}
		for (i = 0; i < wanted; i++)
			fill_packet(packets[i], length, first + sent + i, ntohl(source_net.s_addr) + 10,
				    (uint32_t)sources, destination.s_addr, (uint16_t)port);
		done = sendmmsg(fd, messages, wanted, 0);
		if (done < 0) {
			if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR)
				fail("sendmmsg");
			errors++;
			continue;
		}
		sent += done;
	}
	elapsed = monotonic_seconds() - started;
	printf("{\"sent\": %llu, \"seconds\": %.6f, \"errors\": %llu, \"next\": %llu}\n", sent, elapsed,
	       errors, first + sent);
	close(fd);
	return 0;
}
