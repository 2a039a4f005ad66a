package dev.sluice.bench.flink;

import java.lang.management.ManagementFactory;
import java.util.HashMap;
import java.util.Map;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.CoreOptions;
import org.apache.flink.configuration.StateBackendOptions;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;

/**
 * Runs one Nexmark query in a local MiniCluster (this JVM) and prints a summary:
 *
 * <pre>
 *   java -cp CLASSPATH dev.sluice.bench.flink.Main --query q5 --events 10000000 \
 *       --parallelism 2 --state rocksdb [--variant standard|onepass] [--output DIR] [--tmp DIR]
 * </pre>
 *
 * <p>The summary covers the job only, from its submission to its result (the MiniCluster's
 * start and the JVM's own start are left out): {@code seconds} of wall time and
 * {@code cpuSeconds} of CPU time of the whole process over that interval, all threads
 * (tasks, JIT compiler, garbage collector, the cluster's own) included.
 */
public final class Main {
    public static void main(String[] argv) throws Exception {
        Map<String, String> args = parse(argv);
        String query = args.getOrDefault("query", "q0");
        long events = Long.parseLong(args.getOrDefault("events", "1000000"));
        long rate = Long.parseLong(args.getOrDefault("events-per-second", "100000"));
        int parallelism = Integer.parseInt(args.getOrDefault("parallelism", "1"));
        String state = args.getOrDefault("state", "hashmap");
        String variant = args.getOrDefault("variant", "onepass");
        String output = args.get("output");

        Configuration conf = new Configuration();
        // "hashmap" (objects on the heap) or "rocksdb" (EmbeddedRocksDBStateBackend).
        conf.set(StateBackendOptions.STATE_BACKEND, state);
        if (args.containsKey("tmp")) conf.set(CoreOptions.TMP_DIRS, args.get("tmp"));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
        env.getConfig().enableObjectReuse();

        Generator generator = Generator.withDefaults(events, rate);
        generator.prepare();
        // Each source subtask reads its events in time order: watermarks follow the newest
        // timestamp, as Sluice's bounded-out-of-orderness strategy with a bound of 0 does.
        DataStream<Event> source = env.fromSource(
                new NexmarkSource(generator), WatermarkStrategy.forMonotonousTimestamps(), "nexmark");
        @SuppressWarnings("unchecked")
        DataStream<JsonLine> results = (DataStream<JsonLine>) Queries.build(query, variant, source);
        results.sinkTo(new ResultSink<>(output)).name(output == null ? "discard" : "output");

        var os = (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        long startedAt = System.nanoTime();
        JobClient job = env.executeAsync("nexmark-" + query);
        long wall0 = System.nanoTime();
        long cpu0 = os.getProcessCpuTime();
        job.getJobExecutionResult().get();
        long wall1 = System.nanoTime();
        long cpu1 = os.getProcessCpuTime();

        System.out.printf("events %d%n", events);
        System.out.printf("outputs %d%n", ResultSink.RECORDS.get());
        System.out.printf("startSeconds %.3f%n", (wall0 - startedAt) / 1e9);
        System.out.printf("seconds %.3f%n", (wall1 - wall0) / 1e9);
        System.out.printf("cpuSeconds %.3f%n", (cpu1 - cpu0) / 1e9);
        System.exit(0);
    }

    private static Map<String, String> parse(String[] argv) {
        Map<String, String> args = new HashMap<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 == argv.length) {
                throw new IllegalArgumentException("expected --name value pairs, got " + argv[i]);
            }
            args.put(argv[i].substring(2), argv[++i]);
        }
        return args;
    }
}
