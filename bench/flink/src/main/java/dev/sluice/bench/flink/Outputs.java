package dev.sluice.bench.flink;

/**
 * The queries' output records, with Sluice's field names and order (camelCase JSON, times
 * in epoch milliseconds).
 */
public final class Outputs {
    private Outputs() {}

    public static class Q1 implements JsonLine {
        public long auction;
        public long bidder;
        public long price;
        public long dateTime;

        public Q1() {}

        @Override
        public void appendJson(StringBuilder b) {
            b.append("{\"auction\":").append(auction).append(",\"bidder\":").append(bidder)
                    .append(",\"price\":").append(price).append(",\"dateTime\":").append(dateTime)
                    .append('}');
        }
    }

    public static class Q2 implements JsonLine {
        public long auction;
        public long price;

        public Q2() {}

        @Override
        public void appendJson(StringBuilder b) {
            b.append("{\"auction\":").append(auction).append(",\"price\":").append(price).append('}');
        }
    }

    public static class Q5 implements JsonLine {
        public long windowStart;
        public long windowEnd;
        public long auction;
        public long num;

        public Q5() {}

        @Override
        public void appendJson(StringBuilder b) {
            b.append("{\"windowStart\":").append(windowStart).append(",\"windowEnd\":").append(windowEnd)
                    .append(",\"auction\":").append(auction).append(",\"num\":").append(num).append('}');
        }
    }

    public static class Q7 implements JsonLine {
        public long windowStart;
        public long windowEnd;
        public long auction;
        public long bidder;
        public long price;
        public long dateTime;

        public Q7() {}

        @Override
        public void appendJson(StringBuilder b) {
            b.append("{\"windowStart\":").append(windowStart).append(",\"windowEnd\":").append(windowEnd)
                    .append(",\"auction\":").append(auction).append(",\"bidder\":").append(bidder)
                    .append(",\"price\":").append(price).append(",\"dateTime\":").append(dateTime)
                    .append('}');
        }
    }

    public static class Q8 implements JsonLine {
        public long id;
        public String name;
        public long reserve;

        public Q8() {}

        @Override
        public void appendJson(StringBuilder b) {
            b.append("{\"id\":").append(id).append(",\"name\":\"").append(name)
                    .append("\",\"reserve\":").append(reserve).append('}');
        }
    }
}
