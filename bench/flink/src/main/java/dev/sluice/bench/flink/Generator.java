package dev.sluice.bench.flink;

import java.math.BigDecimal;
import java.math.MathContext;

/**
 * The Nexmark generator of Sluice (runtime/src/nexmark/generator.rs), rewritten in Java so
 * that both engines see the same events: event {@code n} is a pure function of
 * {@code (seed, n)}, with the same ids, prices, times and strings. Every random draw
 * happens in the same order as there; a change on either side breaks the check in run.sh.
 *
 * <p>Numbers that are unsigned 64-bit there are {@code long} here: every value the model
 * produces stays far below 2^63.
 */
public final class Generator implements java.io.Serializable {
    private static final long PERSON_SHARE = 1;
    private static final long AUCTION_SHARE = 3;
    private static final long SHARES = 50;

    static final long FIRST_PERSON_ID = 1000;
    static final long FIRST_AUCTION_ID = 1000;
    static final long FIRST_CATEGORY_ID = 10;
    static final long CATEGORIES = 5;

    private static final long ACTIVE_PEOPLE = 1000;
    private static final long IN_FLIGHT_AUCTIONS = 100;
    private static final long ID_LEAD = 10;
    private static final long HOT_AUCTION_RATIO = 2;
    private static final long HOT_BIDDER_RATIO = 4;
    private static final long HOT_SELLER_RATIO = 4;
    private static final long HOT_CHANNEL_RATIO = 2;
    private static final int CHANNELS = 10_000;

    private static final int PERSON_BYTES = 200;
    private static final int AUCTION_BYTES = 500;
    private static final int BID_BYTES = 100;
    private static final int PRICE_STEPS = 1024;
    private static final int TEXT_POOL = 16 * 1024;

    private static final String[] FIRST_NAMES = {
        "Ada", "Boris", "Carmen", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
        "Kemal", "Lucia",
    };
    private static final String[] LAST_NAMES = {
        "Abbott", "Brennan", "Castillo", "Dunmore", "Eriksen", "Fairlie", "Gallo", "Holt",
        "Ivers", "Juarez",
    };
    private static final String[] CITIES = {
        "Tucson", "Fresno", "Eugene", "Pocatello", "Spokane", "Laramie", "Reno", "Provo",
        "Salem", "Yuma",
    };
    private static final String[] STATES = {"AZ", "CA", "ID", "OR", "WA", "WY", "NV", "UT"};
    private static final String[] HOT_CHANNELS = {"Search", "Social", "Mail", "Partner"};

    public final long seed;
    public final long events;
    public final long eventsPerSecond;
    public final long baseTimeMs;
    public final long outOfOrderMs;

    // The string pools, built once per seed and process, as Sluice's are.
    private static final java.util.concurrent.ConcurrentHashMap<Long, Pools> POOLS =
            new java.util.concurrent.ConcurrentHashMap<>();
    private transient Pools pools;

    public Generator(long seed, long events, long eventsPerSecond, long baseTimeMs, long outOfOrderMs) {
        this.seed = seed;
        this.events = events;
        this.eventsPerSecond = eventsPerSecond;
        this.baseTimeMs = baseTimeMs;
        this.outOfOrderMs = outOfOrderMs;
    }

    /** Sluice's defaults: seed 42, events from 2026-01-01T00:00:00Z, in order. */
    public static Generator withDefaults(long events, long eventsPerSecond) {
        return new Generator(42, events, eventsPerSecond, 1_767_225_600_000L, 0);
    }

    /** SplitMix64, as Sluice's generator uses it. */
    static final class Rng {
        private long state;

        Rng(long seed, long n) {
            state = seed ^ (n * 0xD1B54A32D192ED03L);
            next();
        }

        long next() {
            state += 0x9E3779B97F4A7C15L;
            long z = state;
            z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
            z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
            return z ^ (z >>> 31);
        }

        /** Uniform in [0, n): the high word of the unsigned 128-bit product. */
        long below(long n) {
            long x = next();
            // multiplyHigh is signed; add n back when x's top bit is set (n is positive).
            return Math.multiplyHigh(x, n) + ((x >> 63) & n);
        }

        double unit() {
            return (next() >>> 11) / (double) (1L << 53);
        }

        String letters(int len) {
            char[] c = new char[len];
            for (int i = 0; i < len; i++) c[i] = (char) ('a' + below(26));
            return new String(c);
        }

        int around(int target) {
            int delta = target / 5;
            return target - delta + (int) below(2L * delta + 1);
        }
    }

    private static final class Pools {
        final String[] channels = new String[CHANNELS];
        final String[] urls = new String[CHANNELS];
        final String[] hotUrls = new String[HOT_CHANNELS.length];
        final String[] padding = new String[BID_BYTES + 1];
        final String[] names = new String[FIRST_NAMES.length * LAST_NAMES.length];
        final double[] priceSteps = new double[PRICE_STEPS + 1];
        final String text;

        Pools(long seed) {
            Rng rng = new Rng(seed, -1L); // event number u64::MAX
            for (int i = 0; i < CHANNELS; i++) {
                channels[i] = "channel-" + i;
                urls[i] = url(rng, i);
            }
            for (int i = 0; i < HOT_CHANNELS.length; i++) hotUrls[i] = url(rng, CHANNELS + i);
            for (int len = 0; len <= BID_BYTES; len++) padding[len] = rng.letters(len);
            int k = 0;
            for (String f : FIRST_NAMES) for (String l : LAST_NAMES) names[k++] = f + " " + l;
            for (int s = 0; s <= PRICE_STEPS; s++) priceSteps[s] = priceStep(s);
            text = rng.letters(TEXT_POOL);
        }

        private static final MathContext MC = new MathContext(50);
        private static final BigDecimal LN_10 =
                new BigDecimal("2.30258509299404568401799145468436420760110148862877");

        /**
         * {@code 10^(6 s / PRICE_STEPS)} as Sluice's {@code powf} computes it with the C
         * library's {@code pow}. Java's {@code Math.pow} differs from that in the last bit
         * for a few steps (and varies by JVM), which would change a price now and then. So
         * the value is computed exactly and rounded to the nearest double, and the two steps
         * where glibc's {@code pow} does not round to nearest take glibc's results.
         */
        static double priceStep(int s) {
            if (s == 528) return Double.longBitsToDouble(4653172517435523182L);
            if (s == 597) return Double.longBitsToDouble(4659141133973233848L);
            // 6 s / 1024 = 3 s / 512: a power of ten times exp(ln 10 * rest / 512).
            int whole = 3 * s / 512, rest = 3 * s % 512;
            BigDecimal x = LN_10.multiply(BigDecimal.valueOf(rest)).divide(BigDecimal.valueOf(512), MC);
            BigDecimal term = BigDecimal.ONE, sum = BigDecimal.ONE;
            for (int i = 1; term.compareTo(EPSILON) > 0; i++) {
                term = term.multiply(x, MC).divide(BigDecimal.valueOf(i), MC);
                sum = sum.add(term, MC);
            }
            return sum.scaleByPowerOfTen(whole).doubleValue();
        }

        private static final BigDecimal EPSILON = new BigDecimal("1e-48");

        private static String url(Rng rng, int id) {
            String a = rng.letters(5);
            String b = rng.letters(5);
            return "https://auctions.example/" + a + "/" + b + "/item?channel=" + id;
        }
    }

    private Pools pools() {
        if (pools == null) pools = POOLS.computeIfAbsent(seed, Pools::new);
        return pools;
    }

    /** Builds the pools now, so that their one-off cost falls outside a measurement. */
    public void prepare() {
        pools();
    }

    private long price(Rng rng) {
        double[] steps = pools().priceSteps;
        double x = rng.unit() * PRICE_STEPS;
        int k = Math.min((int) x, PRICE_STEPS - 1);
        double lo = steps[k], hi = steps[k + 1];
        return (long) ((lo + (hi - lo) * (x - k)) * 100.0);
    }

    private String text(Rng rng, int len) {
        len = Math.min(len, TEXT_POOL);
        int start = (int) rng.below(TEXT_POOL - len + 1);
        return pools().text.substring(start, start + len);
    }

    private long baseTime(long n) {
        return baseTimeMs + n * 1000 / Math.max(eventsPerSecond, 1);
    }

    /** Event {@code n}. */
    public Event event(long n) {
        Rng rng = new Rng(seed, n);
        long ts = baseTime(n) - (outOfOrderMs == 0 ? 0 : rng.below(outOfOrderMs + 1));
        long slot = n % SHARES;
        Event e = new Event();
        if (slot < PERSON_SHARE) e.person = person(n, ts, rng);
        else if (slot < PERSON_SHARE + AUCTION_SHARE) e.auction = auction(n, ts, rng);
        else e.bid = bid(n, ts, rng);
        return e;
    }

    private Person person(long n, long ts, Rng rng) {
        Pools p = pools();
        Person r = new Person();
        r.id = lastPerson(n) + FIRST_PERSON_ID;
        r.name = p.names[(int) rng.below(p.names.length)];
        String user = text(rng, 7);
        r.emailAddress = user + "@" + text(rng, 5) + ".com";
        r.creditCard = String.format("%04d %04d %04d %04d",
                rng.below(10_000), rng.below(10_000), rng.below(10_000), rng.below(10_000));
        r.city = CITIES[(int) rng.below(CITIES.length)];
        r.state = STATES[(int) rng.below(STATES.length)];
        int used = 16 + r.name.length() + r.emailAddress.length() + r.creditCard.length()
                + r.city.length() + r.state.length();
        int extraLen = rng.around(Math.max(PERSON_BYTES - used, 0));
        r.dateTime = ts;
        r.extra = text(rng, extraLen);
        return r;
    }

    private Auction auction(long n, long ts, Rng rng) {
        Auction a = new Auction();
        a.id = lastAuction(n) + FIRST_AUCTION_ID;
        a.seller = (rng.below(HOT_SELLER_RATIO) > 0
                ? (lastPerson(n) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
                : nextPerson(n, rng)) + FIRST_PERSON_ID;
        a.initialBid = price(rng);
        a.reserve = a.initialBid + price(rng);
        a.itemName = text(rng, 20);
        a.description = text(rng, 100);
        int used = 56 + a.itemName.length() + a.description.length();
        int extraLen = rng.around(Math.max(AUCTION_BYTES - used, 0));
        a.dateTime = ts;
        // Same order of draws as the original: expiry, category, then the padding.
        a.expires = ts + auctionLength(n, ts, rng);
        a.category = FIRST_CATEGORY_ID + rng.below(CATEGORIES);
        a.extra = text(rng, extraLen);
        return a;
    }

    /** About as long as it takes for the next IN_FLIGHT_AUCTIONS auctions to open. */
    private long auctionLength(long n, long ts, Rng rng) {
        long ahead = IN_FLIGHT_AUCTIONS * SHARES / AUCTION_SHARE;
        long horizon = baseTime(n + ahead) - ts;
        return 1 + rng.below(Math.max(horizon * 2, 1));
    }

    private Bid bid(long n, long ts, Rng rng) {
        Pools p = pools();
        Bid b = new Bid();
        b.auction = (rng.below(HOT_AUCTION_RATIO) > 0
                ? (lastAuction(n) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
                : nextAuction(n, rng)) + FIRST_AUCTION_ID;
        b.bidder = (rng.below(HOT_BIDDER_RATIO) > 0
                ? (lastPerson(n) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
                : nextPerson(n, rng)) + FIRST_PERSON_ID;
        b.price = price(rng);
        if (rng.below(HOT_CHANNEL_RATIO) > 0) {
            int i = (int) rng.below(HOT_CHANNELS.length);
            b.channel = HOT_CHANNELS[i];
            b.url = p.hotUrls[i];
        } else {
            int i = (int) rng.below(CHANNELS);
            b.channel = p.channels[i];
            b.url = p.urls[i];
        }
        int used = 32 + b.channel.length() + b.url.length();
        int extraLen = Math.min(rng.around(Math.max(BID_BYTES - used, 0)), BID_BYTES);
        b.dateTime = ts;
        b.extra = p.padding[extraLen];
        return b;
    }

    private static long lastPerson(long n) {
        return (n / SHARES) * PERSON_SHARE + (PERSON_SHARE - 1);
    }

    private static long lastAuction(long n) {
        long epoch = n / SHARES, slot = n % SHARES;
        if (slot < PERSON_SHARE) return Math.max(epoch * AUCTION_SHARE - 1, 0);
        return epoch * AUCTION_SHARE + Math.min(slot - PERSON_SHARE, AUCTION_SHARE - 1);
    }

    private static long nextPerson(long n, Rng rng) {
        long people = lastPerson(n) + 1;
        long active = Math.min(people, ACTIVE_PEOPLE);
        return people - active + rng.below(active + ID_LEAD);
    }

    private static long nextAuction(long n, Rng rng) {
        long newest = lastAuction(n);
        long oldest = Math.max(newest - IN_FLIGHT_AUCTIONS, 0);
        return oldest + rng.below(newest - oldest + 1 + ID_LEAD);
    }
}
