package dev.sluice.bench.flink;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;

/**
 * Counts results and, when given a directory, writes them as JSON lines into one part file
 * per subtask (like Sluice's output directory). The count goes to a static total: the job
 * runs in this JVM's MiniCluster, so the main thread reads it after the job.
 */
public final class ResultSink<T extends JsonLine> implements Sink<T> {
    static final AtomicLong RECORDS = new AtomicLong();

    private final String dir; // null: count only

    public ResultSink(String dir) {
        this.dir = dir;
    }

    @Override
    public SinkWriter<T> createWriter(WriterInitContext ctx) throws IOException {
        int subtask = ctx.getTaskInfo().getIndexOfThisSubtask();
        BufferedWriter out = null;
        if (dir != null) {
            Path d = Paths.get(dir);
            Files.createDirectories(d);
            out = Files.newBufferedWriter(d.resolve("part-" + subtask + ".jsonl"), StandardCharsets.UTF_8);
        }
        return new Writer<>(out);
    }

    private static final class Writer<T extends JsonLine> implements SinkWriter<T> {
        private final BufferedWriter out;
        private final StringBuilder line = new StringBuilder(256);
        private long count;

        Writer(BufferedWriter out) {
            this.out = out;
        }

        @Override
        public void write(T record, Context ctx) throws IOException {
            count++;
            if (out != null) {
                line.setLength(0);
                record.appendJson(line);
                line.append('\n');
                out.append(line);
            }
        }

        @Override
        public void flush(boolean endOfInput) throws IOException {
            if (out != null) out.flush();
        }

        @Override
        public void close() throws IOException {
            RECORDS.addAndGet(count);
            count = 0;
            if (out != null) out.close();
        }
    }
}
