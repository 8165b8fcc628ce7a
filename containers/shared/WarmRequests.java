// The JVM side of the worker's warm-process protocol (harness/execute/worker.py, "Warm
// steps"), shared by the warm javac and the warm scalac (containers/java/, containers/scala/;
// each image's build copies this file from containers/shared/). After one {"ready": true}
// line, each request line {"argv": [...], "cwd": dir, "env": {...}} is answered by one line
// {"exit_code", "stdout", "stderr"}. A JVM cannot change its working directory, so a request's
// "." and the names of files in cwd become absolute paths, and "cwd/" is taken out of the
// compiler's messages again: they read as the cold command, run in cwd, prints them.
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

public final class WarmRequests {
    private final String s;
    private int i;

    private WarmRequests(String s) { this.s = s; }

    /** One request line: its "argv" (strings), "cwd" (a string) and whatever else it holds. */
    @SuppressWarnings("unchecked")
    public static Map<String, Object> parse(String line) {
        return (Map<String, Object>) new WarmRequests(line).value();
    }

    /** The request's arguments after the program's name, "." and cwd's files made absolute. */
    @SuppressWarnings("unchecked")
    public static List<String> arguments(Map<String, Object> request) {
        List<Object> argv = (List<Object>) request.get("argv");
        String cwd = (String) request.get("cwd");
        List<String> args = new ArrayList<>();
        for (Object o : argv.subList(1, argv.size())) {
            String arg = (String) o;
            if (arg.equals(".")) arg = cwd;
            else if (!arg.startsWith("-") && new File(cwd, arg).exists()) arg = cwd + "/" + arg;
            args.add(arg);
        }
        return args;
    }

    /** The answer line: the exit code and both streams, "cwd/" taken out of them. */
    public static String answer(int exitCode, ByteArrayOutputStream out, ByteArrayOutputStream err, String cwd) {
        String prefix = cwd + "/";
        return "{\"exit_code\": " + exitCode
            + ", \"stdout\": " + quote(out.toString(StandardCharsets.UTF_8).replace(prefix, ""))
            + ", \"stderr\": " + quote(err.toString(StandardCharsets.UTF_8).replace(prefix, "")) + "}";
    }

    /** The worker's pipe, taken from System.out, which then goes nowhere: nothing a compiler
     *  prints (before `serve` or during a request) can reach the pipe. */
    public static PrintStream takePipe() {
        PrintStream pipe = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        System.setOut(new PrintStream(new ByteArrayOutputStream()));
        return pipe;
    }

    /** Says ready, then answers each request line on stdin until it closes. An exception
     *  ends the process: the worker runs that program's step cold and starts a new one. */
    public static void serve(PrintStream pipe, Function<String, String> compile) throws java.io.IOException {
        pipe.println("{\"ready\": true}");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (!line.isBlank()) pipe.println(compile.apply(line));
        }
    }

    private void ws() { while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++; }

    private Object value() {
        ws();
        char c = s.charAt(i);
        if (c == '"') return string();
        if (c == '[') {
            List<Object> list = new ArrayList<>();
            i++; ws();
            if (s.charAt(i) == ']') { i++; return list; }
            while (true) {
                list.add(value()); ws();
                if (s.charAt(i++) == ']') return list;
            }
        }
        if (c == '{') {
            Map<String, Object> map = new HashMap<>();
            i++; ws();
            if (s.charAt(i) == '}') { i++; return map; }
            while (true) {
                ws(); String key = string(); ws(); i++; // ':'
                map.put(key, value()); ws();
                if (s.charAt(i++) == '}') return map;
            }
        }
        int start = i;
        while (i < s.length() && ",]}".indexOf(s.charAt(i)) < 0) i++;
        return s.substring(start, i).trim();
    }

    private String string() {
        StringBuilder b = new StringBuilder();
        i++; // opening quote
        while (true) {
            char c = s.charAt(i++);
            if (c == '"') return b.toString();
            if (c != '\\') { b.append(c); continue; }
            char e = s.charAt(i++);
            switch (e) {
                case 'n': b.append('\n'); break;
                case 't': b.append('\t'); break;
                case 'r': b.append('\r'); break;
                case 'b': b.append('\b'); break;
                case 'f': b.append('\f'); break;
                case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                default: b.append(e);
            }
        }
    }

    private static String quote(String text) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }
}
