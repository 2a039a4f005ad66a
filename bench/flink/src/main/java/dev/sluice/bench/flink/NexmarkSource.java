package dev.sluice.bench.flink;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.ReaderOutput;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SourceSplit;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.core.io.SimpleVersionedSerializer;

/**
 * A bounded source of generated events. Split {@code i} of {@code s} (one per source
 * subtask) reads events {@code i, i + s, i + 2s, ...}, so every subtask's stream is in
 * event-time order and all subtasks advance through event time together, as Sluice's
 * splits do. Checkpoints are not used by the benchmark, so enumerator state is empty.
 */
public final class NexmarkSource implements Source<Event, NexmarkSource.Split, Void> {
    private final Generator generator;

    public NexmarkSource(Generator generator) {
        this.generator = generator;
    }

    @Override
    public Boundedness getBoundedness() {
        return Boundedness.BOUNDED;
    }

    @Override
    public SplitEnumerator<Split, Void> createEnumerator(SplitEnumeratorContext<Split> ctx) {
        return new Enumerator(ctx);
    }

    @Override
    public SplitEnumerator<Split, Void> restoreEnumerator(SplitEnumeratorContext<Split> ctx, Void state) {
        return new Enumerator(ctx);
    }

    @Override
    public SimpleVersionedSerializer<Split> getSplitSerializer() {
        return new SplitSerializer();
    }

    @Override
    public SimpleVersionedSerializer<Void> getEnumeratorCheckpointSerializer() {
        return new SimpleVersionedSerializer<>() {
            @Override
            public int getVersion() {
                return 1;
            }

            @Override
            public byte[] serialize(Void v) {
                return new byte[0];
            }

            @Override
            public Void deserialize(int version, byte[] b) {
                return null;
            }
        };
    }

    @Override
    public SourceReader<Event, Split> createReader(SourceReaderContext ctx) {
        return new Reader(generator);
    }

    /** Events {@code next, next + step, ...} below the generator's event count. */
    public static final class Split implements SourceSplit {
        final int index;
        final long step;
        long next;

        Split(int index, long step, long next) {
            this.index = index;
            this.step = step;
            this.next = next;
        }

        @Override
        public String splitId() {
            return Integer.toString(index);
        }
    }

    private static final class Enumerator implements SplitEnumerator<Split, Void> {
        private final SplitEnumeratorContext<Split> ctx;

        Enumerator(SplitEnumeratorContext<Split> ctx) {
            this.ctx = ctx;
        }

        @Override
        public void start() {}

        @Override
        public void handleSplitRequest(int subtask, String host) {}

        @Override
        public void addSplitsBack(List<Split> splits, int subtask) {
            for (Split s : splits) ctx.assignSplit(s, subtask);
        }

        @Override
        public void addReader(int subtask) {
            int splits = ctx.currentParallelism();
            ctx.assignSplit(new Split(subtask, splits, subtask), subtask);
            ctx.signalNoMoreSplits(subtask);
        }

        @Override
        public Void snapshotState(long checkpointId) {
            return null;
        }

        @Override
        public void close() {}
    }

    private static final class Reader implements SourceReader<Event, Split> {
        /** Events emitted per poll: enough to amortise the call, short enough for the mailbox. */
        private static final int BATCH = 1024;

        private final Generator generator;
        private final List<Split> splits = new ArrayList<>();
        private boolean noMoreSplits;
        private CompletableFuture<Void> available = new CompletableFuture<>();

        Reader(Generator generator) {
            this.generator = generator;
        }

        @Override
        public void start() {}

        @Override
        public InputStatus pollNext(ReaderOutput<Event> out) {
            if (splits.isEmpty()) {
                if (noMoreSplits) return InputStatus.END_OF_INPUT;
                // Wait for the split: a fresh future that addSplits completes.
                if (available.isDone()) available = new CompletableFuture<>();
                return InputStatus.NOTHING_AVAILABLE;
            }
            Split s = splits.get(0);
            for (int i = 0; i < BATCH && s.next < generator.events; i++) {
                Event e = generator.event(s.next);
                out.collect(e, e.timestamp());
                s.next += s.step;
            }
            if (s.next >= generator.events) splits.remove(0);
            if (splits.isEmpty() && noMoreSplits) return InputStatus.END_OF_INPUT;
            return InputStatus.MORE_AVAILABLE;
        }

        @Override
        public List<Split> snapshotState(long checkpointId) {
            return new ArrayList<>(splits);
        }

        @Override
        public CompletableFuture<Void> isAvailable() {
            return available;
        }

        @Override
        public void addSplits(List<Split> added) {
            splits.addAll(added);
            available.complete(null);
        }

        @Override
        public void notifyNoMoreSplits() {
            noMoreSplits = true;
            available.complete(null);
        }

        @Override
        public void close() {}
    }

    private static final class SplitSerializer implements SimpleVersionedSerializer<Split> {
        @Override
        public int getVersion() {
            return 1;
        }

        @Override
        public byte[] serialize(Split s) throws IOException {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            try (DataOutputStream out = new DataOutputStream(bytes)) {
                out.writeInt(s.index);
                out.writeLong(s.step);
                out.writeLong(s.next);
            }
            return bytes.toByteArray();
        }

        @Override
        public Split deserialize(int version, byte[] b) throws IOException {
            try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(b))) {
                return new Split(in.readInt(), in.readLong(), in.readLong());
            }
        }
    }
}
