package dev.sluice.bench.flink;

import dev.sluice.bench.flink.Outputs.Q1;
import dev.sluice.bench.flink.Outputs.Q2;
import dev.sluice.bench.flink.Outputs.Q5;
import dev.sluice.bench.flink.Outputs.Q7;
import dev.sluice.bench.flink.Outputs.Q8;
import java.time.Duration;
import java.util.Map;
import java.util.TreeMap;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.FilterFunction;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.common.functions.JoinFunction;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessAllWindowFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The Nexmark queries as Sluice defines them (runtime/src/jobs/nexmark_queries.rs), written
 * with the DataStream API: same windows, same keys, same output. Stateless steps after the
 * source are chained to it, as Flink does by default.
 */
public final class Queries {
    private Queries() {}

    /** q5's sliding window, q7's and q8's tumbling window: the standard Nexmark sizes. */
    static final long HOT_ITEMS_SIZE_MS = 10_000;
    static final long HOT_ITEMS_SLIDE_MS = 2_000;
    static final long TUMBLING_MS = 10_000;

    /** Builds query {@code name} on {@code events}; {@code variant} only matters for q7. */
    static DataStream<? extends JsonLine> build(String name, String variant, DataStream<Event> events) {
        switch (name) {
            case "q0": return bids(events);
            case "q1": return q1(events);
            case "q2": return q2(events);
            case "q5": return q5(events);
            case "q7": return "standard".equals(variant) ? q7Standard(events) : q7OnePass(events);
            case "q8": return q8(events);
            default: throw new IllegalArgumentException("unknown query " + name);
        }
    }

    static DataStream<Bid> bids(DataStream<Event> events) {
        return events.flatMap(new FlatMapFunction<Event, Bid>() {
            @Override
            public void flatMap(Event e, Collector<Bid> out) {
                if (e.bid != null) out.collect(e.bid);
            }
        }).name("bids");
    }

    /** q1: prices from dollars to euros, {@code price * 908 / 1000} in integers. */
    static DataStream<Q1> q1(DataStream<Event> events) {
        return bids(events).map(new MapFunction<Bid, Q1>() {
            @Override
            public Q1 map(Bid b) {
                Q1 q = new Q1();
                q.auction = b.auction;
                q.bidder = b.bidder;
                q.price = b.price * 908 / 1000;
                q.dateTime = b.dateTime;
                return q;
            }
        }).name("q1");
    }

    /** q2: bids on every 123rd auction. */
    static DataStream<Q2> q2(DataStream<Event> events) {
        return bids(events).filter(new FilterFunction<Bid>() {
            @Override
            public boolean filter(Bid b) {
                return b.auction % 123 == 0;
            }
        }).map(new MapFunction<Bid, Q2>() {
            @Override
            public Q2 map(Bid b) {
                Q2 q = new Q2();
                q.auction = b.auction;
                q.price = b.price;
                return q;
            }
        }).name("q2");
    }

    // ---- q5: hot items -------------------------------------------------------------------

    /**
     * q5: bids per auction in each sliding window, then per window the auction(s) with the
     * most bids, emitted when the watermark passes the window (as Sluice's HottestPerWindow).
     */
    static DataStream<Q5> q5(DataStream<Event> events) {
        return bids(events)
                .keyBy((Bid b) -> b.auction, Types.LONG)
                .window(SlidingEventTimeWindows.of(
                        Duration.ofMillis(HOT_ITEMS_SIZE_MS), Duration.ofMillis(HOT_ITEMS_SLIDE_MS)))
                .aggregate(new CountBids(), new CountPerWindow(),
                        Types.LONG, Types.LONG, TypeInformation.of(Q5.class))
                .name("q5-counts")
                .keyBy((Q5 c) -> c.windowEnd, Types.LONG)
                .process(new HottestPerWindow(), TypeInformation.of(Q5.class))
                .name("q5");
    }

    static final class CountBids implements AggregateFunction<Bid, Long, Long> {
        @Override public Long createAccumulator() { return 0L; }
        @Override public Long add(Bid b, Long n) { return n + 1; }
        @Override public Long getResult(Long n) { return n; }
        @Override public Long merge(Long a, Long b) { return a + b; }
    }

    static final class CountPerWindow extends ProcessWindowFunction<Long, Q5, Long, TimeWindow> {
        @Override
        public void process(Long auction, Context ctx, Iterable<Long> counts, Collector<Q5> out) {
            Q5 q = new Q5();
            q.windowStart = ctx.window().getStart();
            q.windowEnd = ctx.window().getEnd();
            q.auction = auction;
            q.num = counts.iterator().next();
            out.collect(q);
        }
    }

    /** The highest count of a window so far and the auctions that have it. */
    public static class Hottest {
        public long max;
        public long[] auctions = new long[0];

        public Hottest() {}
    }

    static final class HottestPerWindow extends KeyedProcessFunction<Long, Q5, Q5> {
        private transient ValueState<Hottest> best;

        @Override
        public void open(OpenContext ctx) {
            best = getRuntimeContext().getState(
                    new ValueStateDescriptor<>("hottest", TypeInformation.of(Hottest.class)));
        }

        @Override
        public void processElement(Q5 c, Context ctx, Collector<Q5> out) throws Exception {
            Hottest h = best.value();
            if (h == null) h = new Hottest();
            if (c.num > h.max) {
                h.max = c.num;
                h.auctions = new long[0];
            }
            if (c.num == h.max) {
                long[] grown = java.util.Arrays.copyOf(h.auctions, h.auctions.length + 1);
                grown[h.auctions.length] = c.auction;
                h.auctions = grown;
            }
            best.update(h);
            // The counts of a window are stamped with its last millisecond.
            ctx.timerService().registerEventTimeTimer(ctx.timestamp());
        }

        @Override
        public void onTimer(long t, OnTimerContext ctx, Collector<Q5> out) throws Exception {
            Hottest h = best.value();
            if (h != null) {
                long end = ctx.getCurrentKey();
                for (long auction : h.auctions) {
                    Q5 q = new Q5();
                    q.windowStart = end - HOT_ITEMS_SIZE_MS;
                    q.windowEnd = end;
                    q.auction = auction;
                    q.num = h.max;
                    out.collect(q);
                }
            }
            best.clear();
        }
    }

    // ---- q7: highest bid -----------------------------------------------------------------

    /** One tumbling window's highest price. */
    public static class MaxPrice {
        public long windowStart;
        public long windowEnd;
        public long price;

        public MaxPrice() {}
    }

    /**
     * q7 in its standard shape: the highest price of each window, joined back with the
     * window's bids on price, so that every bid waits in window state until the window ends.
     */
    static DataStream<Q7> q7Standard(DataStream<Event> events) {
        DataStream<Bid> bids = bids(events);
        DataStream<MaxPrice> maxes = bids
                .windowAll(TumblingEventTimeWindows.of(Duration.ofMillis(TUMBLING_MS)))
                .aggregate(new MaxPriceOf(), new StampMaxPrice(),
                        Types.LONG, Types.LONG, TypeInformation.of(MaxPrice.class))
                .name("q7-max-price");
        return bids.join(maxes)
                .where((Bid b) -> b.price, Types.LONG)
                .equalTo((MaxPrice m) -> m.price, Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofMillis(TUMBLING_MS)))
                .apply(new JoinFunction<Bid, MaxPrice, Q7>() {
                    @Override
                    public Q7 join(Bid b, MaxPrice m) {
                        return q7(m.windowStart, m.windowEnd, b.auction, b.bidder, b.price, b.dateTime);
                    }
                }, TypeInformation.of(Q7.class))
                .name("q7");
    }

    static final class MaxPriceOf implements AggregateFunction<Bid, Long, Long> {
        @Override public Long createAccumulator() { return 0L; }
        @Override public Long add(Bid b, Long max) { return Math.max(max, b.price); }
        @Override public Long getResult(Long max) { return max; }
        @Override public Long merge(Long a, Long b) { return Math.max(a, b); }
    }

    static final class StampMaxPrice extends ProcessAllWindowFunction<Long, MaxPrice, TimeWindow> {
        @Override
        public void process(Context ctx, Iterable<Long> max, Collector<MaxPrice> out) {
            MaxPrice m = new MaxPrice();
            m.windowStart = ctx.window().getStart();
            m.windowEnd = ctx.window().getEnd();
            m.price = max.iterator().next();
            out.collect(m);
        }
    }

    /**
     * The highest price seen and every bid at that price, as (auction, bidder, time)
     * triples: Sluice's one-pass q7 accumulator (MaxBids).
     */
    public static class MaxBids {
        public long price;
        public long[] rows = new long[0];
        public int count;

        public MaxBids() {}

        void add(long p, long auction, long bidder, long time) {
            if (p > price) {
                price = p;
                count = 0;
            }
            if (p == price) {
                if (rows.length < 3 * (count + 1)) rows = java.util.Arrays.copyOf(rows, 3 * (count + 1) * 2);
                rows[3 * count] = auction;
                rows[3 * count + 1] = bidder;
                rows[3 * count + 2] = time;
                count++;
            }
        }

        void absorb(MaxBids other) {
            if (other.price > price) {
                price = other.price;
                count = 0;
            }
            if (other.price == price) {
                for (int i = 0; i < other.count; i++) {
                    add(other.price, other.rows[3 * i], other.rows[3 * i + 1], other.rows[3 * i + 2]);
                }
            }
        }
    }

    /**
     * q7 as Sluice runs it: one pass keeping only the highest bids, pre-aggregated in each
     * source subtask and merged in one task (Sluice's window_all with a local and a global
     * step). Flink's windowAll has no local step, so a small operator provides it.
     */
    static DataStream<Q7> q7OnePass(DataStream<Event> events) {
        // Custom operators chain by default (ChainingStrategy.ALWAYS): this one runs in the
        // source's task.
        return bids(events)
                .transform("q7-max-local", TypeInformation.of(MaxBids.class), new LocalMaxBids(TUMBLING_MS))
                .windowAll(TumblingEventTimeWindows.of(Duration.ofMillis(TUMBLING_MS)))
                .aggregate(new MergeMaxBids(), new EmitMaxBids(),
                        TypeInformation.of(MaxBids.class), TypeInformation.of(MaxBids.class),
                        TypeInformation.of(Q7.class))
                .name("q7");
    }

    /**
     * Keeps each open tumbling window's MaxBids on the heap and emits it, stamped with the
     * window's last millisecond, when the watermark passes the window.
     */
    static final class LocalMaxBids extends AbstractStreamOperator<MaxBids>
            implements OneInputStreamOperator<Bid, MaxBids> {
        private final long size;
        private transient TreeMap<Long, MaxBids> panes;
        private transient StreamRecord<MaxBids> reuse;

        LocalMaxBids(long size) {
            this.size = size;
        }

        @Override
        public void open() throws Exception {
            super.open();
            panes = new TreeMap<>();
            reuse = new StreamRecord<>(null);
        }

        @Override
        public void processElement(StreamRecord<Bid> r) {
            Bid b = r.getValue();
            long t = r.getTimestamp();
            long start = t - Math.floorMod(t, size);
            panes.computeIfAbsent(start, s -> new MaxBids()).add(b.price, b.auction, b.bidder, b.dateTime);
        }

        @Override
        public void processWatermark(Watermark mark) throws Exception {
            while (!panes.isEmpty() && panes.firstKey() + size - 1 <= mark.getTimestamp()) {
                Map.Entry<Long, MaxBids> pane = panes.pollFirstEntry();
                output.collect(reuse.replace(pane.getValue(), pane.getKey() + size - 1));
            }
            super.processWatermark(mark);
        }
    }

    static final class MergeMaxBids implements AggregateFunction<MaxBids, MaxBids, MaxBids> {
        @Override public MaxBids createAccumulator() { return new MaxBids(); }
        @Override public MaxBids add(MaxBids partial, MaxBids acc) { acc.absorb(partial); return acc; }
        @Override public MaxBids getResult(MaxBids acc) { return acc; }
        @Override public MaxBids merge(MaxBids a, MaxBids b) { a.absorb(b); return a; }
    }

    static final class EmitMaxBids extends ProcessAllWindowFunction<MaxBids, Q7, TimeWindow> {
        @Override
        public void process(Context ctx, Iterable<MaxBids> result, Collector<Q7> out) {
            MaxBids m = result.iterator().next();
            for (int i = 0; i < m.count; i++) {
                out.collect(q7(ctx.window().getStart(), ctx.window().getEnd(),
                        m.rows[3 * i], m.rows[3 * i + 1], m.price, m.rows[3 * i + 2]));
            }
        }
    }

    static Q7 q7(long start, long end, long auction, long bidder, long price, long time) {
        Q7 q = new Q7();
        q.windowStart = start;
        q.windowEnd = end;
        q.auction = auction;
        q.bidder = bidder;
        q.price = price;
        q.dateTime = time;
        return q;
    }

    // ---- q8: new users who opened auctions -----------------------------------------------

    /** The joined fields only cross the shuffle, as in Sluice's q8. */
    public static class NewPerson {
        public long id;
        public String name;

        public NewPerson() {}
    }

    public static class Seller {
        public long seller;
        public long reserve;

        public Seller() {}
    }

    static final OutputTag<Seller> SELLERS = new OutputTag<>("sellers", TypeInformation.of(Seller.class));

    /** q8: people who opened an auction in the tumbling window in which they registered. */
    static DataStream<Q8> q8(DataStream<Event> events) {
        SingleOutputStreamOperator<NewPerson> people = events
                .process(new ProcessFunction<Event, NewPerson>() {
                    @Override
                    public void processElement(Event e, Context ctx, Collector<NewPerson> out) {
                        if (e.person != null) {
                            NewPerson p = new NewPerson();
                            p.id = e.person.id;
                            p.name = e.person.name;
                            out.collect(p);
                        } else if (e.auction != null) {
                            Seller s = new Seller();
                            s.seller = e.auction.seller;
                            s.reserve = e.auction.reserve;
                            ctx.output(SELLERS, s);
                        }
                    }
                }, TypeInformation.of(NewPerson.class))
                .name("q8-project");
        return people.join(people.getSideOutput(SELLERS))
                .where((NewPerson p) -> p.id, Types.LONG)
                .equalTo((Seller s) -> s.seller, Types.LONG)
                .window(TumblingEventTimeWindows.of(Duration.ofMillis(TUMBLING_MS)))
                .apply(new JoinFunction<NewPerson, Seller, Q8>() {
                    @Override
                    public Q8 join(NewPerson p, Seller s) {
                        Q8 q = new Q8();
                        q.id = p.id;
                        q.name = p.name;
                        q.reserve = s.reserve;
                        return q;
                    }
                }, TypeInformation.of(Q8.class))
                .name("q8");
    }
}
