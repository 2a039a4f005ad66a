package dev.sluice.bench.flink;

/**
 * An output record written as one JSON line with the field names and order of Sluice's
 * output, so that both engines' outputs compare line by line. Generated strings hold only
 * letters, digits, spaces and URL punctuation, so nothing needs escaping.
 */
public interface JsonLine {
    void appendJson(StringBuilder out);
}
